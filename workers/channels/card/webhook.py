"""The card processor's webhooks: `Card-Signature` verification and events read into a Notification.

Header: `Card-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<raw body>")>`. Several v1
entries may appear while the processor rolls its secret; one matching is enough. The signed timestamp must be
within TOLERANCE of our clock, so a captured webhook cannot be replayed later (the caller also deduplicates
on the event id). Checked in this order: signature (bad_signature), timestamp (stale_timestamp), then the
event's shape (malformed).

Event: {"id": "evt_...", "type": <one of EVENTS>, "data": <the authorization or refund object>} (a Stripe-style
{"data": {"object": {...}}} is read too). The object is parsed as in objects.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime

from workers.channels.base import (
    AttemptStatus,
    Notification,
    NotificationKind,
    NotificationRejected,
    ProviderAnswerError,
    RefundStatus,
)
from workers.channels.card.objects import authorization_state, refund_state

TOLERANCE_S = 300
HEADER = "card-signature"
EVENTS: dict[str, AttemptStatus | RefundStatus] = {
    "authorization.captured": AttemptStatus.SUCCEEDED,
    "authorization.declined": AttemptStatus.FAILED,
    "authorization.voided": AttemptStatus.CLOSED,
    "refund.succeeded": RefundStatus.SUCCEEDED,
    "refund.failed": RefundStatus.FAILED,
}


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _signature_header(headers: Mapping[str, str]) -> tuple[str, list[str]]:
    value = next((v for k, v in headers.items() if k.lower() == HEADER), "")
    timestamp, signatures = "", []
    for item in value.split(","):
        name, _, text = item.strip().partition("=")
        if name == "t":
            timestamp = text
        elif name == "v1":
            signatures.append(text)
    if not (timestamp.isascii() and timestamp.isdigit()) or not signatures:
        raise NotificationRejected("bad_signature", "no usable Card-Signature header (t=...,v1=...)")
    return timestamp, signatures


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: datetime) -> None:
    timestamp, signatures = _signature_header(headers)
    expected = expected_signature(secret, timestamp, body)
    # compare_digest on every candidate: the time taken must not tell a forger how much of a guess was right.
    if not any(hmac.compare_digest(expected.encode(), s.encode("utf-8", "replace")) for s in signatures):
        raise NotificationRejected("bad_signature", "Card-Signature does not match the body")
    if abs(now.timestamp() - int(timestamp)) > TOLERANCE_S:
        raise NotificationRejected("stale_timestamp", f"signed at {timestamp}, more than {TOLERANCE_S} s from now")


def read_event(body: bytes, account_id: str) -> Notification:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise NotificationRejected("malformed", "the webhook body is not JSON") from error
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise NotificationRejected("malformed", "the webhook is not an event with a data object")
    event_id, kind, data = event.get("id"), event.get("type"), event["data"]
    expected = EVENTS.get(kind) if isinstance(kind, str) else None
    if not isinstance(event_id, str) or not event_id or expected is None:
        # Only the five events above are subscribed to; anything else is not something we can act on.
        raise NotificationRejected("malformed", f"event {event_id!r} of type {kind!r} is not handled")
    obj = data["object"] if isinstance(data.get("object"), dict) else data
    reference = obj.get("reference")
    if not isinstance(reference, str) or not reference:
        raise NotificationRejected("malformed", f"event {event_id} names no reference")
    try:
        if isinstance(expected, AttemptStatus):
            payment = authorization_state(obj, reference)
            if payment.status is not expected:
                raise ProviderAnswerError(f"a {kind} event about an authorization in state {obj.get('status')!r}")
            return Notification(NotificationKind.PAYMENT, event_id, "", payment=payment)
        refund = refund_state(obj, reference, account_id)
        if refund.status is not expected:
            raise ProviderAnswerError(f"a {kind} event about a refund in state {obj.get('status')!r}")
        # The refund object names the authorization, not our out_trade_no: the caller finds the payment
        # through out_refund_no.
        return Notification(NotificationKind.REFUND, event_id, "", refund=refund)
    except ProviderAnswerError as error:
        raise NotificationRejected("malformed", f"event {event_id}: {error}") from error
