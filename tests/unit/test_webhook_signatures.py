"""Webhook signatures (paygate/webhooks.py, docs/events.md): the documented test vector, rotation, the replay
window and malformed headers."""

from __future__ import annotations

import pytest

from paygate.webhooks import WebhookSignatureError, signature, signature_header, verify_webhook

BODY = b'{"eventId":"evt_01jexample00000000000000000","type":"EVENT_TYPE_PAYMENT_SUCCEEDED"}'
T = 1767225600
# The vector in docs/events.md, also checked there with `openssl dgst -sha256 -hmac`.
VECTOR = "9ffa6c14fb35c50128a7ee43f01b9fddd70b72b7f26a63e591635333c93c3226"


def test_the_documented_vector() -> None:
    assert signature("whsec_test_secret", T, BODY) == VECTOR
    assert signature_header(["whsec_test_secret"], T, BODY) == f"t={T},v1={VECTOR}"


def test_a_good_delivery_verifies_and_gives_the_event() -> None:
    headers = {"paygate-signature": signature_header(["s1"], T, BODY)}  # header names are case-insensitive
    event = verify_webhook(headers, BODY, ["s1"], now=T + 299)
    assert event == {"eventId": "evt_01jexample00000000000000000", "type": "EVENT_TYPE_PAYMENT_SUCCEEDED"}


def test_during_a_rotation_either_secret_verifies() -> None:
    headers = {"Paygate-Signature": signature_header(["new", "old"], T, BODY)}
    assert verify_webhook(headers, BODY, ["new"], now=T)
    assert verify_webhook(headers, BODY, ["old"], now=T)
    with pytest.raises(WebhookSignatureError, match="no v1 signature matches"):
        verify_webhook(headers, BODY, ["neither"], now=T)


@pytest.mark.parametrize(
    ("headers", "body", "now", "message"),
    [
        ({"Paygate-Signature": signature_header(["s1"], T, BODY)}, BODY + b" ", T, "no v1 signature matches"),
        ({"Paygate-Signature": signature_header(["s1"], T, BODY)}, BODY, T + 301, "more than 300 s"),
        ({"Paygate-Signature": signature_header(["s1"], T, BODY)}, BODY, T - 301, "more than 300 s"),
        ({}, BODY, T, "no Paygate-Signature header"),
        ({"Paygate-Signature": f"v1={VECTOR}"}, BODY, T, "needs t="),
        ({"Paygate-Signature": f"t={T}"}, BODY, T, "needs t="),
        ({"Paygate-Signature": f"t=-{T},v1={VECTOR}"}, BODY, T, "needs t="),
        ({"Paygate-Signature": f"t={T}," + ",".join(["v1=" + "0" * 64] * 20)}, BODY, T, "more than 16"),
        ({"Paygate-Signature": f"t={T},v0={VECTOR}"}, BODY, T, "needs t="),
    ],
)
def test_bad_deliveries_are_refused(headers: dict[str, str], body: bytes, now: int, message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message):
        verify_webhook(headers, body, ["s1", "whsec_test_secret"], now=now)
