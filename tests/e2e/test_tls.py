"""TLS and mutual TLS on real stacks (docs/security.md, "TLS and mutual TLS").

- the shared stack serves TLS with the dev CA `paygate serve` made: trusted it works; plaintext or another CA fails;
- workers accept only the gateway's certificate: no certificate, a certificate of another CA, or the notification
  edge's certificate (right CA, wrong name) are refused; the gateway's works; the internal port likewise admits
  only the edge's;
- with PAYGATE_TLS_CLIENT_CA the public port requires a client certificate of that CA;
- production mode refuses to start a gateway, a worker or `serve` without TLS material (real exit code, message).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.tls import WORKER_SERVER_NAME
from stack.dev_certs import ensure_dev_certs
from tests.support import REPO_ROOT, Stack, free_port, start_stack, wait_until

BALANCE_PATH = "/paygate.v1.PaymentGateway/GetBalance"


def _pem(stack: Stack, name: str) -> bytes:
    return (stack.tls_dir / name).read_bytes()


def _worker_credentials(stack: Stack, holder: str | None, ca_dir: Path | None = None) -> grpc.ChannelCredentials:
    """What a direct caller of a worker presents: the internal CA, and `holder`'s dev certificate (from `ca_dir`)."""
    root = _pem(stack, "internal-ca.pem")
    if holder is None:
        return grpc.ssl_channel_credentials(root)
    directory = ca_dir or stack.tls_dir
    key, chain = (directory / f"{holder}.key").read_bytes(), (directory / f"{holder}.pem").read_bytes()
    return grpc.ssl_channel_credentials(root, key, chain)


def _direct_balance(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError | pb.Balance:
    """A GetBalance straight to a worker, with an owner header only a gateway should be able to set."""
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(
            address, credentials, options=[("grpc.ssl_target_name_override", WORKER_SERVER_NAME)]
        )
    body = pb.GetBalanceRequest(user_id="tls-learner", currency="CNY").SerializeToString()
    try:
        with channel:
            answer = channel.unary_unary(BALANCE_PATH)(body, metadata=[("x-paygate-owner", "intruder")], timeout=10)
    except grpc.RpcError as error:
        return error
    return pb.Balance.FromString(answer)


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


# -- the public port --------------------------------------------------------------------------------------------


def test_a_client_trusting_the_dev_ca_calls_over_tls(stack: Stack, credentials: tuple[str, str]) -> None:
    with PaygateClient(stack.listen, *credentials, root_certificates=stack.tls_dir / "ca.pem") as client:
        top_up = client.top_up(
            pb.TopUpRequest(
                order_id="tls-top-up-1",
                user_id="tls-learner",
                amount_minor=1000,
                currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX,
            )
        )
    assert top_up.status == pb.PAYMENT_STATUS_SUCCEEDED


@pytest.mark.parametrize("how", ["plaintext", "another CA"])
def test_a_client_that_does_not_speak_tls_with_the_dev_ca_gets_nothing(
    stack: Stack, credentials: tuple[str, str], tmp_path: Path, how: str
) -> None:
    if how == "plaintext":
        client = PaygateClient(stack.listen, *credentials)
    else:
        other, _ = ensure_dev_certs(tmp_path)  # a CA of its own: the gateway's certificate does not chain to it
        client = PaygateClient(stack.listen, *credentials, root_certificates=other.ca)
    with client, pytest.raises(grpc.RpcError) as refused:
        client.get_balance(pb.GetBalanceRequest(user_id="tls-learner", currency="CNY"), timeout_s=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


# -- workers: only the gateway's certificate ----------------------------------------------------------------


def _worker_address(stack: Stack) -> str:
    return str(stack.state()["children"]["worker-1"]["address"])


@pytest.mark.parametrize("holder", [None, "plaintext", "caller-of-another-ca"])
def test_a_worker_refuses_callers_without_an_internal_certificate(
    stack: Stack, tmp_path: Path, holder: str | None
) -> None:
    if holder == "plaintext":
        credentials = None
    elif holder == "caller-of-another-ca":
        # The public CA's sample caller: a valid certificate, but not of the internal CA.
        credentials = _worker_credentials(stack, "caller")
    else:
        credentials = _worker_credentials(stack, None)
    outcome = _direct_balance(_worker_address(stack), credentials)
    assert isinstance(outcome, grpc.RpcError)
    assert outcome.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed: no call ran


def test_a_worker_refuses_the_notification_edges_certificate(stack: Stack) -> None:
    outcome = _direct_balance(_worker_address(stack), _worker_credentials(stack, "notify-edge"))
    assert isinstance(outcome, grpc.RpcError)
    assert outcome.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(outcome) == "PEER_NOT_ALLOWED"
    assert "paygate-gateway" in (outcome.details() or "")


def test_any_internal_certificate_may_ask_a_worker_for_its_health(stack: Stack) -> None:
    """What a worker's own probe does (deploy/kubernetes): health tells nothing, so no name is checked."""
    for holder in ("worker", "notify-edge"):
        options = [("grpc.ssl_target_name_override", WORKER_SERVER_NAME)]
        credentials = _worker_credentials(stack, holder)
        with grpc.secure_channel(_worker_address(stack), credentials, options=options) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, holder


def test_a_worker_serves_the_gateways_certificate(stack: Stack) -> None:
    outcome = _direct_balance(_worker_address(stack), _worker_credentials(stack, "gateway-client"))
    assert isinstance(outcome, pb.Balance), outcome
    assert outcome.currency == "CNY"


def test_another_gateway_process_with_the_gateway_certificates_reaches_the_workers(
    stack: Stack, credentials: tuple[str, str], tmp_path: Path
) -> None:
    """What a multi-host deployment does: a separate `paygate gateway` with its own TLS variables."""
    workers = [child["address"] for name, child in stack.state()["children"].items() if name.startswith("worker-")]
    listen = f"127.0.0.1:{free_port()}"
    env = {**stack.env, **stack.gateway_tls_env()}
    env["PAYGATE_REDIS_URL"] = (stack.data_dir / "run" / "redis.url").read_text().strip()
    env["PAYGATE_DATABASE_URL"] = f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}"
    env["PAYGATE_MASTER_KEY"] = (stack.data_dir / "master.key").read_text().strip()
    (tmp_path / "run").mkdir()
    argv = [sys.executable, "-m", "stack", "gateway", "--listen", listen, "--data-dir", str(tmp_path)]
    with (tmp_path / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [*argv, "--worker-addresses", ",".join(workers)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: (tmp_path / "run" / "gateway.ready").exists() or process.poll() is not None, attempts=600)
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()
        with PaygateClient(listen, *credentials, credentials=stack.channel_credentials()) as client:
            quote = client.quote_price(pb.QuotePriceRequest(list_price_minor=100, currency="CNY"))
        assert quote.amount_minor == 100
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / "gateway.log").read_text()[-4000:]


# -- client certificates on the public port, and the workers' internal port -----------------------------------


@pytest.fixture(scope="module")
def client_cert_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose gateway requires client certificates of the dev public CA, with the notification edge."""
    data_dir = Path(tmp_path_factory.mktemp("client-certs"))
    certs, _ = ensure_dev_certs(data_dir)  # made before serve, so that the CA can be named; serve reuses them
    running = start_stack(data_dir, workers=1, channels=True, extra_env={"PAYGATE_TLS_CLIENT_CA": str(certs.ca)})
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


def _health(stack: Stack, credentials: grpc.ChannelCredentials) -> grpc.RpcError | int:
    with grpc.secure_channel(stack.listen, credentials) as channel:
        try:
            return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status)
        except grpc.RpcError as error:
            return error


def test_client_certificates_required_none_is_refused(client_cert_stack: Stack) -> None:
    outcome = _health(client_cert_stack, client_cert_stack.channel_credentials())
    assert isinstance(outcome, grpc.RpcError)
    assert outcome.code() == grpc.StatusCode.UNAVAILABLE


def test_client_certificates_required_one_of_another_ca_is_refused(client_cert_stack: Stack) -> None:
    root = _pem(client_cert_stack, "ca.pem")
    internal = client_cert_stack.tls_dir
    foreign = grpc.ssl_channel_credentials(
        root, (internal / "gateway-client.key").read_bytes(), (internal / "gateway-client.pem").read_bytes()
    )
    outcome = _health(client_cert_stack, foreign)
    assert isinstance(outcome, grpc.RpcError)
    assert outcome.code() == grpc.StatusCode.UNAVAILABLE


def test_client_certificates_required_the_callers_is_accepted(client_cert_stack: Stack) -> None:
    assert _health(client_cert_stack, client_cert_stack.channel_credentials("caller")) == (
        health_pb2.HealthCheckResponse.SERVING
    )
    key_id, secret = client_cert_stack.create_key("tls-client-cert")
    tls = client_cert_stack.tls_dir
    with PaygateClient(
        client_cert_stack.listen,
        key_id,
        secret,
        root_certificates=tls / "ca.pem",
        client_certificate=tls / "caller.pem",
        client_key=tls / "caller.key",
    ) as client:
        balance = client.get_balance(pb.GetBalanceRequest(user_id="tls-learner", currency="CNY"))
    assert balance.available_minor == 0


def test_the_internal_port_admits_only_the_notification_edge(client_cert_stack: Stack) -> None:
    internal = f"unix:{_worker_address(client_cert_stack).removeprefix('unix:').removesuffix('.sock')}-internal.sock"
    apply_path = "/paygate.internal.v1.Notifications/Apply"
    options = [("grpc.ssl_target_name_override", WORKER_SERVER_NAME)]
    outcomes = {}
    for holder in ("gateway-client", "notify-edge"):
        credentials = _worker_credentials(client_cert_stack, holder)
        with grpc.secure_channel(internal, credentials, options=options) as channel:
            try:
                channel.unary_unary(apply_path)(b"{}", timeout=10)
                outcomes[holder] = grpc.StatusCode.OK
            except grpc.RpcError as error:
                outcomes[holder] = error.code()
    # The gateway's certificate is refused by name; the edge's reaches the service, which refuses the empty body.
    assert outcomes == {
        "gateway-client": grpc.StatusCode.PERMISSION_DENIED,
        "notify-edge": grpc.StatusCode.INVALID_ARGUMENT,
    }


# -- production refuses plaintext ----------------------------------------------------------------------------


def _production(*argv: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PAYGATE_MODE": "production",
        "PAYGATE_DATABASE_URL": "postgresql://paygate@127.0.0.1:1/none",  # never reached: TLS is checked first
        "PAYGATE_REDIS_URL": "redis://127.0.0.1:1/0",
        "PAYGATE_MASTER_KEY": Fernet.generate_key().decode(),
        "PAYGATE_RISK_RULES": "off",  # production asks for a choice of risk rules (docs/risk.md), when it knows them
        **(extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "stack", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_production_refuses_a_plaintext_gateway(tmp_path: Path) -> None:
    result = _production("gateway", "--data-dir", str(tmp_path), "--worker-addresses", "unix:/nonexistent.sock")
    assert result.returncode == 2, result.stderr
    assert "production mode refuses a plaintext gateway: set PAYGATE_TLS_CERT and PAYGATE_TLS_KEY" in result.stderr


def test_production_gateway_takes_tls_flags_and_still_wants_internal_mutual_tls(tmp_path: Path) -> None:
    cert, key = ensure_dev_certs(tmp_path)[0].pair("gateway")
    result = _production(
        "gateway",
        *("--data-dir", str(tmp_path), "--worker-addresses", "unix:/nonexistent.sock"),
        *("--tls-cert", str(cert), "--tls-key", str(key)),
    )
    assert result.returncode == 2, result.stderr
    assert "production mode refuses a plaintext gateway: set PAYGATE_INTERNAL_TLS_CA" in result.stderr


def test_production_refuses_a_worker_without_internal_mutual_tls(tmp_path: Path) -> None:
    result = _production("worker", "--data-dir", str(tmp_path), "--listen", f"unix:{tmp_path}/w.sock")
    assert result.returncode == 2, result.stderr
    assert "production mode refuses a plaintext worker: set PAYGATE_INTERNAL_TLS_CA" in result.stderr


def test_production_refuses_a_notification_edge_without_internal_mutual_tls(tmp_path: Path) -> None:
    result = _production("notify-edge", "--data-dir", str(tmp_path), "--worker-addresses", "unix:/nonexistent.sock")
    assert result.returncode == 2, result.stderr
    assert "production mode refuses a plaintext notification edge: set PAYGATE_INTERNAL_TLS_CA" in result.stderr


def test_production_refuses_serve_without_tls_and_with_plaintext(tmp_path: Path) -> None:
    without = _production("serve", "--data-dir", str(tmp_path / "a"), "--workers", "1")
    assert without.returncode == 2, without.stderr
    assert "PAYGATE_TLS_CERT" in without.stderr
    plaintext = _production("serve", "--data-dir", str(tmp_path / "b"), "--workers", "1", "--plaintext")
    assert plaintext.returncode == 2, plaintext.stderr
    assert "--plaintext is for dev mode only" in plaintext.stderr
