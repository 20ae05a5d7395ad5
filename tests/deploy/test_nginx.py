"""The nginx edges (deploy/nginx/) on the nginx Debian ships (1.22), and real gRPC calls through the gRPC edge.

- both edge files, included together in one `http {}` of a minimal main nginx.conf (pid, logs and temp paths in
  a tmp dir) with certificates made by `paygate certs dev`, pass `nginx -t`;
- a negative control: nginx >= 1.25.1's `http2 on;` directive fails `nginx -t` on an nginx older than that (the
  reason the edge uses `listen ... ssl http2`), so the check can fail;
- nginx started on a loopback port in front of a real `paygate serve` (TLS on both hops, the gateway's certificate
  verified): a gRPC health check, a signed call (the signature metadata passes through; the worker id and the
  caller's request id come back), a request id nginx makes when the caller sends none, and an unknown method
  answered UNIMPLEMENTED by the edge itself;
- the HTTPS edge for provider callbacks in front of the stack's notification edge: a POST under /notify/ reaches
  it; a GET there (403), anything outside /notify/ (404) and a body over 64 KiB (413) are refused by nginx.
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from stack.dev_certs import ensure_dev_certs
from tests.deploy.deploy_support import DEPLOY_DIR, tool
from tests.support import Stack, free_port, start_stack, wait_until

NGINX_DIR = DEPLOY_DIR / "nginx"
MAIN_CONF = """\
pid {root}/nginx.pid;
error_log {root}/logs/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
{includes}
}}
"""


@dataclass(frozen=True)
class Edge:
    """Where the test's nginx finds its files, and where the gRPC edge listens."""

    root: Path
    tls_dir: Path  # the `paygate certs dev` layout: gateway.pem/.key (a cert for 127.0.0.1), ca.pem
    grpc_port: int
    notify_port: int
    upstream: str  # the gateway's HOST:PORT
    notify_upstream: str  # the notification edge's HOST:PORT

    @property
    def main_conf(self) -> Path:
        return self.root / "nginx.conf"


def _substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each placeholder of a shipped file; a placeholder that is gone fails the test (not silently kept)."""
    for placeholder, value in replacements.items():
        assert placeholder in text, f"{placeholder!r} is no longer in the file: update this test"
        text = text.replace(placeholder, value)
    return text


def write_edge(edge: Edge) -> None:
    """The shipped edge files with their placeholders filled in, included by a minimal main nginx.conf."""
    for folder in ("logs", "temp"):
        (edge.root / folder).mkdir(parents=True, exist_ok=True)
    tls, logs = edge.tls_dir, f"{edge.root}/logs/"
    grpc_text = _substitute(
        (NGINX_DIR / "paygate.conf").read_text(),
        {
            "listen 443 ssl http2;": f"listen 127.0.0.1:{edge.grpc_port} ssl http2;",
            "paygate-gateway.paygate.svc.cluster.local:50051": edge.upstream,
            "/etc/nginx/tls/paygate.crt": str(tls / "gateway.pem"),
            "/etc/nginx/tls/paygate.key": str(tls / "gateway.key"),
            "/etc/nginx/tls/paygate-gateway-ca.crt": str(tls / "ca.pem"),
            "grpc_ssl_name paygate.example.com;": "grpc_ssl_name localhost;",  # a name of the dev certificate
            "/var/log/nginx/": logs,
        },
    )
    notify_text = _substitute(
        (NGINX_DIR / "paygate-notify.conf").read_text(),
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{edge.notify_port} ssl;",
            "server 127.0.0.1:8080;": f"server {edge.notify_upstream};",
            "/etc/nginx/tls/pay-callbacks.crt": str(tls / "gateway.pem"),
            "/etc/nginx/tls/pay-callbacks.key": str(tls / "gateway.key"),
            "/var/log/nginx/": logs,
        },
    )
    (edge.root / "paygate.conf").write_text(grpc_text)
    (edge.root / "paygate-notify.conf").write_text(notify_text)
    includes = f"    include {edge.root}/paygate.conf;\n    include {edge.root}/paygate-notify.conf;"
    edge.main_conf.write_text(MAIN_CONF.format(root=edge.root, includes=includes))


def nginx_test(nginx: str, edge: Edge) -> subprocess.CompletedProcess[str]:
    command = [nginx, "-t", "-p", str(edge.root), "-c", str(edge.main_conf), "-e", str(edge.root / "logs/error.log")]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def offline_edge(tmp_path: Path) -> Edge:
    certs, _ = ensure_dev_certs(tmp_path / "certs")
    return Edge(tmp_path / "nginx", certs.directory, free_port(), free_port(), "127.0.0.1:50051", "127.0.0.1:8080")


def test_both_edge_files_pass_nginx_t(offline_edge: Edge) -> None:
    nginx = tool("nginx")
    write_edge(offline_edge)
    result = nginx_test(nginx, offline_edge)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_newer_http2_directive_is_what_fails_on_older_nginx(offline_edge: Edge) -> None:
    nginx = tool("nginx")
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    assert found, version
    if tuple(map(int, found.groups())) >= (1, 25, 1):
        pytest.skip(f"{version.strip()} knows `http2 on;`; this control is for the nginx of Debian 12 (1.22)")
    write_edge(offline_edge)
    written = offline_edge.root / "paygate.conf"
    written.write_text(written.read_text().replace(" ssl http2;", " ssl;\n    http2 on;", 1))
    result = nginx_test(nginx, offline_edge)
    assert result.returncode != 0
    assert 'unknown directive "http2"' in result.stderr


# -- nginx in front of a real stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notify_listen() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, notify_listen: str) -> Iterator[Stack]:
    tool("nginx")  # skip before starting a stack for nothing
    # The notification edge runs too (for the HTTPS edge in front of it), without the channel simulator.
    extra_env = {"PAYGATE_NOTIFY_LISTEN": notify_listen}
    running = start_stack(tmp_path_factory.mktemp("edge-stack"), workers=1, extra_env=extra_env)
    yield running
    assert running.stop() == 0, running.log()[-4000:]


@pytest.fixture(scope="module")
def edge(stack: Stack, notify_listen: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    nginx = tool("nginx")
    root = tmp_path_factory.mktemp("edge")
    running = Edge(root, stack.tls_dir, free_port(), free_port(), stack.listen, notify_listen)
    write_edge(running)
    command = [nginx, "-p", str(running.root), "-c", str(running.main_conf), "-e", str(running.root / "logs/error.log")]
    process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _serving(running, stack, process), attempts=400, what="nginx edge answering health checks")
        yield running
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests, then exit
        process.wait(60)
        assert process.stderr is not None
        process.stderr.close()


def _channel(edge: Edge, stack: Stack) -> grpc.Channel:
    """A client of the edge: nginx presents the dev certificate of 127.0.0.1, signed by the stack's CA."""
    return grpc.secure_channel(f"127.0.0.1:{edge.grpc_port}", stack.channel_credentials())


def _health(edge: Edge, stack: Stack) -> int:
    with _channel(edge, stack) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def _serving(edge: Edge, stack: Stack, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"nginx exited with {process.returncode}: {(edge.root / 'logs/error.log').read_text()}")
    try:
        return _health(edge, stack) == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False  # not listening yet


def test_a_health_check_passes_through_the_edge(edge: Edge, stack: Stack) -> None:
    assert _health(edge, stack) == health_pb2.HealthCheckResponse.SERVING


def test_a_signed_call_passes_through_with_its_metadata(edge: Edge, stack: Stack) -> None:
    key_id, secret = stack.create_key("nginx-edge")
    request = pb.QuotePriceRequest(list_price_minor=10_000, discount_rate="0.10", tax_rate="0.05", currency="CNY")
    with PaygateClient("unused", key_id, secret, channel=_channel(edge, stack)) as client:
        answer = client.call("QuotePrice", request, pb.PriceQuote, request_id="edge-test-0001")
        made_by_nginx = client.call("QuotePrice", request, pb.PriceQuote)
    assert answer.response.amount_minor == 9_450
    assert answer.worker  # the gateway's response metadata came back through nginx
    assert answer.request_id == "edge-test-0001"  # the caller's id went through to the gateway and back
    assert re.fullmatch(r"[0-9a-f]{32}", made_by_nginx.request_id or "")  # nginx's $request_id


def test_an_unknown_method_is_unimplemented_at_the_edge(edge: Edge, stack: Stack) -> None:
    with _channel(edge, stack) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary("/paygate.v1.Elsewhere/Nothing")(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert refused.value.details() == "unknown service"  # nginx's answer, not the gateway's


# -- the HTTPS edge for provider callbacks, in front of the stack's notification edge -----------------------------


def _post(edge: Edge, stack: Stack, path: str, body: bytes | None, method: str = "POST") -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(stack.tls_dir / "ca.pem"))
    request = urllib.request.Request(f"https://127.0.0.1:{edge.notify_port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def test_the_callback_edge_passes_only_posts_under_notify(edge: Edge, stack: Stack) -> None:
    # A channel the notification edge does not know: its own 404 text proves nginx handed the POST to it (and
    # nothing is stored for an unknown channel).
    # The stack does not wait for its notification edge to listen: until it does, nginx answers 502.
    wait_until(
        lambda: _post(edge, stack, "/notify/no-such-channel", b"{}")[0] != 502, attempts=600, what="edge listening"
    )
    status, body = _post(edge, stack, "/notify/no-such-channel", b"{}")
    assert (status, body) == (404, b"no such notification endpoint")
    assert _post(edge, stack, "/notify/card", None, method="GET")[0] == 403  # limit_except POST
    assert _post(edge, stack, "/healthz", None, method="GET")[0] == 404  # the edge's health stays internal
    assert _post(edge, stack, "/notify/card", b"x" * (65 * 1024))[0] == 413  # client_max_body_size 64k
