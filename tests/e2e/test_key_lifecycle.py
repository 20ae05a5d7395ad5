"""The API-key lifecycle through real processes (docs/security.md, "Key lifecycle"): rotation with a grace period,
revocation seen by every gateway in front of the same workers, and no stack outside dev mode without a master key.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import REPO_ROOT, Stack, free_port, wait_until

QUOTE = method_path("QuotePrice")


def call(stack: Stack, listen: str, key_id: str, secret: str) -> grpc.StatusCode:
    """One signed QuotePrice through the gateway at `listen` (the stack's, or another in front of its workers,
    with the same dev certificate): its status code."""
    body = pb.QuotePriceRequest(list_price_minor=100, currency="CNY").SerializeToString()
    with grpc.secure_channel(listen, stack.channel_credentials()) as channel:
        try:
            channel.unary_unary(QUOTE)(body, metadata=signing.signed_metadata(key_id, secret, QUOTE, body), timeout=20)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def rotate(stack: Stack, key_id: str, grace_hours: str) -> str:
    result = stack.cli("keys", "rotate", key_id, "--grace-hours", grace_hours, "--json")
    assert result.returncode == 0, result.stderr
    rotated = json.loads(result.stdout)
    assert rotated["key_id"] == key_id and rotated["previous_secret_expires_at"]
    return rotated["secret"]  # type: ignore[no-any-return]


def secret_used(stack: Stack, key_id: str, which: str) -> float:
    prefix = f'paygate_auth_secret_used_total{{key_id="{key_id}",secret="{which}"}} '
    return sum(float(line.rsplit(" ", 1)[1]) for line in stack.metrics_text().splitlines() if line.startswith(prefix))


def test_rotation_keeps_the_old_secret_valid_for_its_grace_only(stack: Stack) -> None:
    key_id, first = stack.create_key("rotating")
    assert call(stack, stack.listen, key_id, first) == grpc.StatusCode.OK
    second = rotate(stack, key_id, "24")
    assert second != first
    assert call(stack, stack.listen, key_id, second) == grpc.StatusCode.OK
    assert call(stack, stack.listen, key_id, first) == grpc.StatusCode.OK  # within its grace
    wait_until(lambda: secret_used(stack, key_id, "previous") >= 1, attempts=100, what="metric")
    assert secret_used(stack, key_id, "current") >= 2

    # Rotating again drops the first secret at once; the second one's grace is a few seconds, then it ends too.
    third = rotate(stack, key_id, "0.001")
    assert call(stack, stack.listen, key_id, first) == grpc.StatusCode.UNAUTHENTICATED
    assert call(stack, stack.listen, key_id, third) == grpc.StatusCode.OK
    wait_until(
        lambda: call(stack, stack.listen, key_id, second) == grpc.StatusCode.UNAUTHENTICATED,
        attempts=200,
        interval_s=0.1,
        what="the grace of the second secret to end",
    )
    assert call(stack, stack.listen, key_id, third) == grpc.StatusCode.OK


def test_rotating_an_unknown_or_revoked_key_is_refused(stack: Stack) -> None:
    assert stack.cli("keys", "rotate", "key_missing").returncode == 1
    key_id, _ = stack.create_key("revoked-then-rotated")
    assert stack.cli("keys", "revoke", key_id).returncode == 0
    result = stack.cli("keys", "rotate", key_id)
    assert result.returncode == 1 and "no active key" in result.stderr
    assert stack.cli("keys", "rotate", key_id, "--grace-hours", "-1").returncode == 2


@pytest.fixture
def second_gateway(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Another `paygate gateway` process in front of the stack's workers, sharing its database and Redis."""
    state = stack.state()
    workers = [child["address"] for name, child in state["children"].items() if name.startswith("worker-")]
    listen = f"127.0.0.1:{free_port()}"
    env = dict(stack.env)
    env["PAYGATE_DATABASE_URL"] = f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}"
    env["PAYGATE_REDIS_URL"] = (stack.data_dir / "run" / "redis.url").read_text().strip()
    env["PAYGATE_MASTER_KEY"] = (stack.data_dir / "master.key").read_text().strip()
    env.update(stack.gateway_tls_env())
    (tmp_path / "run").mkdir()
    argv = [sys.executable, "-m", "stack", "gateway", "--listen", listen, "--data-dir", str(tmp_path)]
    with (tmp_path / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [*argv, "--worker-addresses", ",".join(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        wait_until(lambda: (tmp_path / "run" / "gateway.ready").exists() or process.poll() is not None, attempts=600)
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()
        yield listen
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / "gateway.log").read_text()[-4000:]


def test_a_revocation_reaches_every_gateway(stack: Stack, second_gateway: str) -> None:
    key_id, secret = stack.create_key("revoked-everywhere")
    for listen in (stack.listen, second_gateway):
        assert call(stack, listen, key_id, secret) == grpc.StatusCode.OK  # both have the key cached now
    assert stack.cli("keys", "revoke", key_id).returncode == 0
    for listen in (stack.listen, second_gateway):
        assert call(stack, listen, key_id, secret) == grpc.StatusCode.UNAUTHENTICATED
