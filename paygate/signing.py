"""The request-signing scheme of every `PaymentGateway` call (docs/signing.md).

string-to-sign = "\\n".join([ALGORITHM, method path, timestamp as sent, nonce as sent, hex sha256(body)])
signature      = lowercase hex HMAC-SHA256(secret as UTF-8, string-to-sign)

Both sides use this module: the client to sign, the gateway to verify. It knows nothing about keys or Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

ALGORITHM = "PAYGATE-HMAC-SHA256"
KEY_ID_HEADER = "x-paygate-key-id"
TIMESTAMP_HEADER = "x-paygate-timestamp"
NONCE_HEADER = "x-paygate-nonce"
SIGNATURE_HEADER = "x-paygate-signature"
REQUEST_ID_HEADER = "x-request-id"
WORKER_HEADER = "x-paygate-worker"
# Set by the gateway on calls it forwards to workers, after authenticating the caller; never taken from callers.
OWNER_HEADER = "x-paygate-owner"
CALLER_KEY_HEADER = "x-paygate-caller-key-id"
SIGNED_HEADERS = (KEY_ID_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

# \A...\Z, ASCII only: `$` would also match before a final newline, and these are applied with fullmatch.
NONCE_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{16,64}\Z", re.ASCII)
KEY_ID_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z", re.ASCII)
TIMESTAMP_PATTERN = re.compile(r"\A[0-9]{1,12}\Z", re.ASCII)
SIGNATURE_PATTERN = re.compile(r"\A[0-9a-f]{64}\Z", re.ASCII)
REQUEST_ID_PATTERN = re.compile(r"\A[A-Za-z0-9_.:-]{1,128}\Z", re.ASCII)


def string_to_sign(method: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return "\n".join((ALGORITHM, method, timestamp, nonce, body_hash)).encode()


def compute_signature(secret: str, method: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(secret.encode(), string_to_sign(method, timestamp, nonce, body), hashlib.sha256).hexdigest()


def signature_matches(secret: str, method: str, timestamp: str, nonce: str, body: bytes, signature: str) -> bool:
    expected = compute_signature(secret, method, timestamp, nonce, body)
    return hmac.compare_digest(expected.encode(), signature.encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(24)  # 32 chars of [A-Za-z0-9_-]


def signed_metadata(
    key_id: str,
    secret: str,
    method: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> list[tuple[str, str]]:
    """The four signature metadata entries for one call."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = new_nonce() if nonce is None else nonce
    return [
        (KEY_ID_HEADER, key_id),
        (TIMESTAMP_HEADER, ts),
        (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER, compute_signature(secret, method, ts, nonce, body)),
    ]


@dataclass(frozen=True)
class SignedHeaders:
    key_id: str
    timestamp: str
    nonce: str
    signature: str


class MalformedSignature(Exception):
    """A signature header is missing or malformed; `reason` is a metric label, the message is for callers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_signed_headers(metadata: Iterable[tuple[str, str | bytes]]) -> SignedHeaders:
    """Pick the signature headers out of call metadata; each must appear exactly once and be well formed."""
    found: dict[str, str] = {}
    for key, value in metadata:
        if key in SIGNED_HEADERS:
            if key in found:
                raise MalformedSignature("malformed", f"metadata {key} appears more than once")
            if isinstance(value, bytes):
                raise MalformedSignature("malformed", f"metadata {key} must be text")
            found[key] = value
    missing = [h for h in SIGNED_HEADERS if h not in found]
    if missing:
        raise MalformedSignature("missing", f"missing metadata: {', '.join(missing)}; every call must be signed")
    checks = (
        (KEY_ID_HEADER, KEY_ID_PATTERN, "1-64 chars of [A-Za-z0-9_-]"),
        (TIMESTAMP_HEADER, TIMESTAMP_PATTERN, "Unix time in whole seconds"),
        (NONCE_HEADER, NONCE_PATTERN, "16-64 chars of [A-Za-z0-9_-]"),
        (SIGNATURE_HEADER, SIGNATURE_PATTERN, "64 lowercase hex digits"),
    )
    for header, pattern, shape in checks:
        if not pattern.fullmatch(found[header]):
            raise MalformedSignature("malformed", f"metadata {header} is malformed: expected {shape}")
    return SignedHeaders(
        key_id=found[KEY_ID_HEADER],
        timestamp=found[TIMESTAMP_HEADER],
        nonce=found[NONCE_HEADER],
        signature=found[SIGNATURE_HEADER],
    )
