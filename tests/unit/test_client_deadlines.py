"""A client's deadlines and what each attempt sends (paygate/calls.py, docs/client.md "Deadlines"). A client's
channel connects lazily, so these build real clients without any server."""

from __future__ import annotations

import pytest

from paygate.calls import DEFAULT_TIMEOUT_S, DEFAULT_TIMEOUTS_S
from paygate.client import PaygateClient
from paygate.retry import DEFAULT_RETRY, NO_RETRY
from paygate.signing import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_matches
from paygate.v1 import payment_gateway_pb2 as pb

TARGET = "127.0.0.1:9"  # never dialled: nothing here makes a call


def test_each_method_has_its_default_deadline() -> None:
    with PaygateClient(TARGET, "key", "secret") as client:
        assert client.default_timeout_s("CreatePayment") == DEFAULT_TIMEOUTS_S["CreatePayment"] == 30.0
        assert client.default_timeout_s("GetBalance") == DEFAULT_TIMEOUT_S == 10.0
        assert client.retry is DEFAULT_RETRY


def test_the_client_deadline_applies_to_every_method_and_a_method_deadline_wins_over_it() -> None:
    with PaygateClient(TARGET, "key", "secret", timeout_s=5, timeouts_s={"TopUp": 45}, retry=NO_RETRY) as client:
        assert client.default_timeout_s("CreatePayment") == 5
        assert client.default_timeout_s("TopUp") == 45
        assert client.retry is NO_RETRY
        assert client._attempts("TopUp", 2.5, None).timeout_s == 2.5  # a call's own deadline wins over both


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"timeout_s": 0}, "timeout_s must be more than 0"),
        ({"timeout_s": -1.0}, "timeout_s must be more than 0"),
        ({"timeouts_s": {"TopUp": 0}}, "TopUp must be more than 0"),
        ({"timeouts_s": {"Topup": 10}}, "unknown method"),
    ],
)
def test_a_bad_deadline_is_refused_clearly(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PaygateClient(TARGET, "key", "secret", **arguments)  # type: ignore[arg-type]


def test_every_attempt_sends_the_same_bytes_under_a_fresh_signature() -> None:
    request = pb.CreatePaymentRequest(order_id="order-1", user_id="u", amount_minor=100, currency="CNY")
    with PaygateClient(TARGET, "key", "secret") as client:
        prepared = client._prepare("CreatePayment", request, "req-1", ())
        first, second = dict(prepared.metadata("key", "secret")), dict(prepared.metadata("key", "secret"))
    assert pb.CreatePaymentRequest.FromString(prepared.body).order_id == "order-1"  # the idempotency key, once
    assert first[NONCE_HEADER] != second[NONCE_HEADER]  # the gateway refuses a nonce it has seen
    assert first["x-request-id"] == second["x-request-id"] == "req-1"
    for metadata in (first, second):
        assert signature_matches(
            "secret",
            prepared.path,
            metadata[TIMESTAMP_HEADER],
            metadata[NONCE_HEADER],
            prepared.body,
            metadata[SIGNATURE_HEADER],
        )
