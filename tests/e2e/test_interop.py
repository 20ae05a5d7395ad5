"""An independent gRPC client (buf curl, written in Go) makes signed calls through the gateway."""

from __future__ import annotations

import json
import subprocess

from paygate import signing
from paygate.client import PaygateClient
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import REPO_ROOT, Stack, buf_binary


def buf_curl(stack: Stack, method: str, body_json: dict[str, object], metadata: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    headers = [arg for key, value in metadata for arg in ("-H", f"{key}: {value}")]
    return subprocess.run(
        [
            buf_binary(),
            "curl",
            "--protocol",
            "grpc",
            # Over TLS with the stack's dev CA (HTTP/2 by ALPN), or HTTP/2 without TLS for a --plaintext stack.
            *(["--cacert", stack.ca_file] if stack.ca_file else ["--http2-prior-knowledge"]),
            "--schema",
            "protos",
            *headers,
            "-d",
            json.dumps(body_json),
            f"{'https' if stack.tls else 'http'}://{stack.listen}{method_path(method)}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_buf_curl_signed_top_up_and_balance(stack: Stack, credentials: tuple[str, str], client: PaygateClient) -> None:
    key_id, secret = credentials
    request = pb.TopUpRequest(
        order_id="buf-curl-1", user_id="u-buf", amount_minor=777, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    )
    # Go's encoder writes the same bytes as Python's for this message, so a signature over ours verifies theirs.
    metadata = signing.signed_metadata(key_id, secret, method_path("TopUp"), request.SerializeToString())
    result = buf_curl(
        stack,
        "TopUp",
        {
            "order_id": "buf-curl-1",
            "user_id": "u-buf",
            "amount_minor": "777",
            "currency": "CNY",
            "method": "PAYMENT_METHOD_SANDBOX",
        },
        metadata,
    )
    assert result.returncode == 0, result.stderr
    payment = json.loads(result.stdout)
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert client.get_balance(pb.GetBalanceRequest(user_id="u-buf", currency="CNY")).available_minor == 777


def test_buf_curl_unsigned_call_is_unauthenticated(stack: Stack) -> None:
    result = buf_curl(stack, "GetBalance", {"user_id": "u-buf", "currency": "CNY"}, [])
    assert result.returncode != 0
    assert "unauthenticated" in result.stderr.lower()
