"""Redis over TLS (`rediss://`): a redis-server that speaks only TLS and requires a client certificate (both made
with the project's dev certificate code, stack/dev_certs.py) serves a whole `paygate serve` stack — gateway
nonces, worker locks, the CLI's key announcements. With a CA that did not sign the server's certificate the stack
fails closed: calls get `UNAVAILABLE`, nothing is written, and the log says the certificate was not verified.
The URL carries a password, which appears in no log line and only in a file of mode 0600 (docs/configuration.md,
"Redis")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, func, select

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.schema import payments
from stack.dev_certs import ensure_dev_certs
from tests.redis_servers import Processes, tls_redis
from tests.support import start_stack

PASSWORD = "tls-redis-pw-4f1c9e"  # a throwaway test server's, checked absent from logs


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    certs, _ = ensure_dev_certs(tmp_path / "redis-certs")
    processes = Processes(tmp_path / "redis")
    processes.directory.mkdir()
    try:
        port = tls_redis(processes, certs.directory, password=PASSWORD)
        yield port, certs.directory
    finally:
        processes.close()


def rediss_url(port: int, ca: Path, client_certs: Path) -> str:
    return (
        f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        f"&ssl_certfile={client_certs / 'caller.pem'}&ssl_keyfile={client_certs / 'caller.key'}"
    )


def test_a_stack_works_over_rediss_with_a_client_certificate(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, certs = tls_server
    stack = start_stack(
        tmp_path / "stack", workers=1, extra_env={"PAYGATE_REDIS_URL": rediss_url(port, certs / "ca.pem", certs)}
    )
    try:
        marker = stack.data_dir / "run" / "redis.url"  # where `paygate` commands find the stack's Redis
        assert marker.stat().st_mode & 0o077 == 0, "the URL with its password is readable by others"
        key = stack.create_key("redis-tls")  # the CLI announces the new key over the same TLS URL
        with stack.client(*key) as client:
            client.top_up(
                pb.TopUpRequest(
                    order_id="t-tls", user_id="u-tls", amount_minor=1_000, currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
            )  # fmt: skip
            paid = client.create_payment(
                pb.CreatePaymentRequest(
                    order_id="o-tls", user_id="u-tls", amount_minor=300, currency="CNY",
                    method=pb.PAYMENT_METHOD_WALLET, payee_id="creator-tls",
                )
            )  # fmt: skip
            assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
            assert client.get_balance(pb.GetBalanceRequest(user_id="u-tls", currency="CNY")).available_minor == 700
        verified = stack.cli("ledger", "verify")
        assert verified.returncode == 0 and "ledger verify: OK" in verified.stdout, verified.stdout + verified.stderr
    finally:
        assert stack.stop() == 0, stack.log()[-4000:]
    assert PASSWORD not in stack.log()


def test_a_wrong_ca_fails_closed_with_a_clear_error(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, certs = tls_server
    other, _ = ensure_dev_certs(tmp_path / "other-certs")  # a CA that signed nothing the server presents
    stack = start_stack(
        tmp_path / "stack", workers=1, extra_env={"PAYGATE_REDIS_URL": rediss_url(port, other.ca, certs)}
    )
    try:
        key = stack.create_key("redis-wrong-ca")  # keys live in the database; only the announcement fails
        with stack.client(*key) as client:
            for method, request in (
                ("top_up", pb.TopUpRequest(order_id="t-ca", user_id="u-ca", amount_minor=1_000, currency="CNY",
                                           method=pb.PAYMENT_METHOD_SANDBOX)),
                ("get_balance", pb.GetBalanceRequest(user_id="u-ca", currency="CNY")),
            ):  # fmt: skip
                with pytest.raises(grpc.RpcError) as refused:
                    getattr(client, method)(request)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
                assert "unreachable" in str(refused.value.details())
    finally:
        assert stack.stop() == 0, stack.log()[-4000:]
    engine = create_engine(f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}")
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(payments)).scalar_one() == 0
    engine.dispose()
    log = stack.log()
    assert "redis unavailable" in log and "certificate verify failed" in log, log[-4000:]
    assert PASSWORD not in log
