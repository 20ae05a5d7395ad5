"""Alipay openapi RSA2 signatures (SHA256withRSA, PKCS#1 v1.5, base64).

Requests: the string to sign is the ASCII-sorted `k=v` pairs of every non-empty parameter except `sign`, joined
with `&`, values exactly as sent (before URL encoding).

Synchronous answers: `{"alipay_trade_query_response": {...}, "sign": "..."}`; the signature covers the exact text of
the `*_response` value as it appears in the body. Re-serialising the parsed JSON would change spacing, key order or
escapes (`\\/`, `\\u4e2d`) and break the check, so the raw substring is located with a JSON scanner.

Notifications: the sorted pairs of all parameters except `sign` and `sign_type`, values URL-decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_WHITESPACE = " \t\n\r"


def content_to_sign(params: Mapping[str, str], exclude: tuple[str, ...] = ("sign",)) -> str:
    return "&".join(f"{key}={params[key]}" for key in sorted(params) if key not in exclude and params[key] != "")


def rsa2_sign(key: rsa.RSAPrivateKey, content: str) -> str:
    return base64.b64encode(key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa2_verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def sign_params(params: Mapping[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The parameters plus their `sign`, ready to be form- or URL-encoded."""
    signed = dict(params)
    signed["sign"] = rsa2_sign(key, content_to_sign(params))
    return signed


def notification_contents(params: Mapping[str, str]) -> list[str]:
    """The strings a genuine notification may be signed over. Alipay's own SDKs verify over every parameter but
    `sign` and `sign_type`, empty ones included; its documentation of the signing rule drops empty values. Both are
    Alipay's signature over Alipay's parameters, so accepting either admits nothing forged; the second only differs
    when an empty parameter is present."""
    excluded = ("sign", "sign_type")
    everything = "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in excluded)
    non_empty = content_to_sign(params, excluded)
    return [everything] if everything == non_empty else [everything, non_empty]


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _expect(text: str, index: int, char: str) -> None:
    if text[index : index + 1] != char:
        raise ValueError(f"expected {char!r} at offset {index}")


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each member's value of a JSON object lies in `text`, as (start, end) offsets. Only top-level members
    count, so a nested object that happens to contain the same key cannot be mistaken for the signed one."""
    decoder = json.JSONDecoder()
    index = _skip(text, 0)
    _expect(text, index, "{")
    index = _skip(text, index + 1)
    spans: dict[str, tuple[int, int]] = {}
    while text[index : index + 1] != "}":
        _expect(text, index, '"')
        key, index = decoder.raw_decode(text, index)  # a JSON string: the member's name, unescaped
        index = _skip(text, index)
        _expect(text, index, ":")
        start = _skip(text, index + 1)
        _, end = decoder.raw_decode(text, start)
        if key in spans:
            raise ValueError(f"duplicate member {key!r}")  # which copy would the signature cover?
        spans[key] = (start, end)
        index = _skip(text, end)
        if text[index : index + 1] == ",":
            index = _skip(text, index + 1)
            _expect(text, index, '"')  # no trailing comma
        else:
            _expect(text, index, "}")
    if _skip(text, index + 1) != len(text):
        raise ValueError("text after the JSON object")
    return spans


def signed_response(text: str, api_method: str) -> tuple[str, str]:
    """(the raw text the signature covers, the signature) of a synchronous answer to `api_method`. Alipay answers
    a request refused at its gateway with `error_response` in place of the method's member."""
    spans = top_level_spans(text)
    name = api_method.replace(".", "_") + "_response"
    span = spans.get(name) or spans.get("error_response")
    if span is None:
        raise ValueError(f"no {name} in the answer")
    sign_span = spans.get("sign")
    signature = json.loads(text[sign_span[0] : sign_span[1]]) if sign_span else ""
    if not isinstance(signature, str) or not signature:
        raise ValueError("the answer is not signed")
    return text[span[0] : span[1]], signature
