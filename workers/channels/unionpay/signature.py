"""UnionPay 5.1.0 signMethod 01 (RSA-SHA256) and the `k=v&...` messages it signs.

String to sign: every parameter except `signature`, sorted by name (ASCII), as `k=v` joined by `&`, values as
sent (not URL-encoded). Its SHA-256 is taken as lowercase hex, and that hex *text* is what SHA256withRSA
(PKCS#1 v1.5) signs; base64 of the result is `signature`. Answers and notifications are verified the same way
with UnionPay's key.

Which key: real 5.1.0 answers carry `signPubKeyCert`, the certificate to verify with, which the official SDK
accepts only after checking it chains to UnionPay's root. A key that arrives inside the message proves nothing
without that chain check (a forger would simply send their own), so we never verify with it: we verify with
the platform key from our configuration, and use the message's `certId` (or, when absent as in real 5.1.0
answers, the serial number of `signPubKeyCert`, which is what a certId is) only to say "signed with a
certificate we do not trust" (`unknown_cert`) rather than "forged" when UnionPay rotates its certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_PERCENT_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")


class SignatureError(Exception):
    """An answer or notification that does not verify; `reason` is bad_signature, unknown_cert or malformed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def string_to_sign(params: Mapping[str, str]) -> str:
    return "&".join(f"{key}={params[key]}" for key in sorted(params) if key != "signature")


def _digest(params: Mapping[str, str]) -> bytes:
    return hashlib.sha256(string_to_sign(params).encode("utf-8")).hexdigest().encode("ascii")


def sign(params: Mapping[str, str], key: rsa.RSAPrivateKey) -> str:
    return base64.b64encode(key.sign(_digest(params), padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify(params: Mapping[str, str], key: rsa.RSAPublicKey, trusted_cert_id: str) -> None:
    """Raises SignatureError unless `params` were signed by UnionPay's configured certificate."""
    sent_cert_id = params.get("certId") or _serial_of(params.get("signPubKeyCert", ""))
    if sent_cert_id != trusted_cert_id:
        raise SignatureError("unknown_cert", f"signed with certificate {sent_cert_id or '(none)'!r}, not ours")
    signature = params.get("signature", "")
    if not signature:
        raise SignatureError("bad_signature", "the message carries no signature")
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, _digest(params), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError) as error:
        raise SignatureError("bad_signature", "the signature does not verify with UnionPay's key") from error


def _serial_of(pem: str) -> str:
    if not pem:
        return ""
    try:
        return str(x509.load_pem_x509_certificate(pem.encode("ascii")).serial_number)
    except ValueError:
        return ""


def encode_form(params: Mapping[str, str]) -> str:
    """What we send: an ordinary application/x-www-form-urlencoded body (the signature is over raw values)."""
    return urlencode(sorted(params.items()))


def parse_form(body: bytes) -> dict[str, str]:
    """UnionPay's answers and notifications as a dict; SignatureError("malformed") if they cannot be one.

    Notifications are browser-style form posts (percent-encoded). The real gateway's synchronous answers are
    *not* percent-encoded: values are raw, so a base64 signature keeps its `+` and a value holding `&` or `=` is
    wrapped in braces (`reqReserved={a=b&c=d}`). A signature is 256 bytes, whose base64 always ends in `==`, so a
    percent-encoded message always contains an escape (%3D) and a raw one practically never does: that tells
    the two apart, and the same parser reads both."""
    try:
        if _PERCENT_ESCAPE.search(body):
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True, encoding="utf-8")
        else:
            pairs = _raw_pairs(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise SignatureError("malformed", "the message is not a k=v&... form") from error
    if not pairs:
        raise SignatureError("malformed", "the message is empty")
    params: dict[str, str] = {}
    for key, value in pairs:
        if not key or key in params:
            # A repeated name could let a forger show one value to the signature check and another to us.
            raise SignatureError("malformed", f"empty or repeated parameter name {key!r}")
        params[key] = value
    return params


def _raw_pairs(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    depth, start = 0, 0
    for index, char in enumerate(text + "&"):
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "&" and depth == 0:
            item = text[start:index]
            start = index + 1
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"no '=' in {item[:40]!r}")
            pairs.append((key, value))
    if depth != 0:
        raise ValueError("unbalanced braces")
    return pairs
