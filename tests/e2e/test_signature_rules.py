"""Every rejection rule of the signature scheme, over the wire (docs/signing.md)."""

from __future__ import annotations

import time
import urllib.request
import uuid

import grpc
import pytest

from paygate import signing
from paygate.client import PaygateClient
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack

BALANCE_PATH = method_path("GetBalance")


@pytest.fixture(scope="module")
def raw_channel(stack: Stack):  # type: ignore[no-untyped-def]
    with stack.channel() as channel:
        yield channel


def send(channel: grpc.Channel, path: str, body: bytes, metadata: list[tuple[str, str]]) -> grpc.RpcError | bytes:
    """Send raw bytes with exactly the given metadata; return the response bytes or the error."""
    try:
        return channel.unary_unary(path)(body, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error


def balance_body(user: str = "u-auth") -> bytes:
    return pb.GetBalanceRequest(user_id=user, currency="CNY").SerializeToString()


def assert_rejected(result: grpc.RpcError | bytes, code: grpc.StatusCode, fragment: str) -> None:
    assert isinstance(result, grpc.RpcError), "the call was accepted"
    assert result.code() == code, result.details()
    assert fragment in result.details()


def test_a_correctly_signed_raw_call_is_accepted(raw_channel, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    body = balance_body()
    result = send(raw_channel, BALANCE_PATH, body, signing.signed_metadata(key_id, secret, BALANCE_PATH, body))
    assert isinstance(result, bytes)
    assert pb.Balance.FromString(result).user_id == "u-auth"


@pytest.mark.parametrize("header", signing.SIGNED_HEADERS)
def test_missing_metadata(raw_channel, credentials, header: str) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    body = balance_body()
    metadata = [(k, v) for k, v in signing.signed_metadata(key_id, secret, BALANCE_PATH, body) if k != header]
    assert_rejected(send(raw_channel, BALANCE_PATH, body, metadata), grpc.StatusCode.UNAUTHENTICATED, header)


def test_no_metadata_at_all(raw_channel) -> None:  # type: ignore[no-untyped-def]
    assert_rejected(send(raw_channel, BALANCE_PATH, balance_body(), []), grpc.StatusCode.UNAUTHENTICATED, "missing")


def test_unknown_key(raw_channel) -> None:  # type: ignore[no-untyped-def]
    body = balance_body()
    metadata = signing.signed_metadata("key_doesnotexist", "sk_whatever", BALANCE_PATH, body)
    assert_rejected(send(raw_channel, BALANCE_PATH, body, metadata), grpc.StatusCode.UNAUTHENTICATED, "unknown key")


def test_revoked_key(stack: Stack) -> None:
    key_id, secret = stack.create_key("to-be-revoked")
    with stack.client(key_id, secret) as client:
        client.get_balance(pb.GetBalanceRequest(user_id="u-rev", currency="CNY"))  # works while active
        result = stack.cli("keys", "revoke", key_id)
        assert result.returncode == 0, result.stderr
        with pytest.raises(grpc.RpcError) as error:
            client.get_balance(pb.GetBalanceRequest(user_id="u-rev", currency="CNY"))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in error.value.details()


@pytest.mark.parametrize("offset_s", [-301, 301, -100_000])
def test_skewed_timestamp(raw_channel, credentials, offset_s: int) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    body = balance_body()
    metadata = signing.signed_metadata(key_id, secret, BALANCE_PATH, body, timestamp=int(time.time()) + offset_s)
    assert_rejected(send(raw_channel, BALANCE_PATH, body, metadata), grpc.StatusCode.UNAUTHENTICATED, "clock")


def test_timestamp_within_the_window_is_accepted(raw_channel, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    body = balance_body()
    metadata = signing.signed_metadata(key_id, secret, BALANCE_PATH, body, timestamp=int(time.time()) - 250)
    assert isinstance(send(raw_channel, BALANCE_PATH, body, metadata), bytes)


def test_replayed_nonce(raw_channel, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    body = balance_body()
    metadata = signing.signed_metadata(key_id, secret, BALANCE_PATH, body)
    assert isinstance(send(raw_channel, BALANCE_PATH, body, metadata), bytes)
    assert_rejected(send(raw_channel, BALANCE_PATH, body, metadata), grpc.StatusCode.UNAUTHENTICATED, "nonce")


def test_wrong_signature(raw_channel, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, _ = credentials
    body = balance_body()
    metadata = signing.signed_metadata(key_id, "sk_not_the_secret", BALANCE_PATH, body)
    result = send(raw_channel, BALANCE_PATH, body, metadata)
    assert_rejected(result, grpc.StatusCode.UNAUTHENTICATED, "signature does not match")
    assert isinstance(result, grpc.RpcError)
    expected = signing.compute_signature(credentials[1], BALANCE_PATH, metadata[1][1], metadata[2][1], body)
    assert expected not in result.details()  # never reveal the expected signature


def test_signature_for_another_method(raw_channel, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    body = balance_body()
    metadata = signing.signed_metadata(key_id, secret, method_path("GetPayment"), body)
    assert_rejected(send(raw_channel, BALANCE_PATH, body, metadata), grpc.StatusCode.UNAUTHENTICATED, "signature")


def test_body_altered_after_signing(raw_channel, credentials, client: PaygateClient) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    user = f"u-{uuid.uuid4().hex[:8]}"
    path = method_path("TopUp")
    signed = pb.TopUpRequest(
        order_id=f"o-{uuid.uuid4().hex[:8]}",
        user_id=user,
        amount_minor=100,
        currency="CNY",
        method=pb.PAYMENT_METHOD_SANDBOX,
    )
    metadata = signing.signed_metadata(key_id, secret, path, signed.SerializeToString())
    tampered = pb.TopUpRequest()
    tampered.CopyFrom(signed)
    tampered.amount_minor = 1_000_000
    result = send(raw_channel, path, tampered.SerializeToString(), metadata)
    assert_rejected(result, grpc.StatusCode.UNAUTHENTICATED, "signature")
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 0


def test_a_key_without_the_scope_is_permission_denied(stack: Stack) -> None:
    key_id, secret = stack.create_key("read-only", scopes="balances:read")
    with stack.client(key_id, secret) as client:
        assert client.get_balance(pb.GetBalanceRequest(user_id="u-scope", currency="CNY")).available_minor == 0
        with pytest.raises(grpc.RpcError) as error:
            client.top_up(
                pb.TopUpRequest(
                    order_id="o-scope",
                    user_id="u-scope",
                    amount_minor=1,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
            )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_unknown_method_is_unimplemented(raw_channel, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    path = "/paygate.v1.PaymentGateway/Steal"
    metadata = signing.signed_metadata(key_id, secret, path, b"")
    result = send(raw_channel, path, b"", metadata)
    assert isinstance(result, grpc.RpcError) and result.code() == grpc.StatusCode.UNIMPLEMENTED


def test_auth_failures_are_counted_by_reason(stack: Stack, raw_channel) -> None:  # type: ignore[no-untyped-def]
    send(raw_channel, BALANCE_PATH, balance_body(), [])
    with urllib.request.urlopen(f"http://{stack.metrics_listen}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'paygate_auth_failures_total{reason="missing"}' in text
