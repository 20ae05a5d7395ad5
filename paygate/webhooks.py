"""Webhook signatures (docs/events.md, "Webhooks"): Paygate signs each delivery, receivers verify it here.

    Paygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>[,v1=<...>]

While an endpoint's secret is being rotated, both the new and the old secret sign: one `v1=` entry each, until the
old one expires. A receiver accepts a delivery when any `v1` matches one of its secrets and `t` is within
`tolerance_s` (300 s) of its clock, which stops a captured delivery from being replayed later. Deliveries can
repeat (they are at least once): deduplicate by the event's `eventId`.

    from paygate.webhooks import verify_webhook
    event = verify_webhook(request.headers, request.body, [current_secret])   # raises WebhookSignatureError
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

SIGNATURE_HEADER = "Paygate-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
MAX_ENTRIES = 16  # a header with more entries than any rotation produces is refused unread


class WebhookSignatureError(ValueError):
    """The delivery is not from Paygate, or not from now: answer 400 and do nothing with it."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 over "<timestamp>.<body>" with the endpoint's secret."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    """The header value Paygate sends: one `v1` entry per secret that signs (two during a rotation)."""
    entries = [f"t={timestamp}", *(f"{SCHEME}={signature(secret, timestamp, body)}" for secret in secrets)]
    return ",".join(entries)


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Iterable[str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivered event (the proto3 JSON of paygate.v1.Event) once the signature and timestamp check out."""
    value = _header(headers)
    timestamp, signatures = _parse(value)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError(f"the timestamp is more than {tolerance_s} s from this clock: a replay or a skew")
    expected = [signature(secret, timestamp, body) for secret in secrets]
    if not any(hmac.compare_digest(mine, theirs) for mine in expected for theirs in signatures):
        raise WebhookSignatureError("no v1 signature matches any of the given secrets")
    event: dict[str, Any] = json.loads(body)
    return event


def _header(headers: Mapping[str, str]) -> str:
    for name, value in headers.items():
        if name.lower() == SIGNATURE_HEADER.lower():
            return value
    raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header")


def _parse(value: str) -> tuple[int, list[str]]:
    entries = value.split(",")
    if len(entries) > MAX_ENTRIES:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} has more than {MAX_ENTRIES} entries")
    timestamp: int | None = None
    signatures: list[str] = []
    for entry in entries:
        key, _, item = entry.strip().partition("=")
        if key == "t" and item.isascii() and item.isdigit() and len(item) <= 12:
            timestamp = int(item)
        elif key == SCHEME and len(item) == 64:
            signatures.append(item)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} needs t=<unix seconds> and at least one {SCHEME}= entry")
    return timestamp, signatures
