"""The merchant side of each protocol, written for the tests from the protocol descriptions (it does not use the
simulator's code): request signing, response and callback verification, callback decryption."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BEIJING = timezone(timedelta(hours=8))


def sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(key: rsa.RSAPublicKey, data: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature), data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def sorted_query(params: dict[str, str], skip: tuple[str, ...]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in skip and v != "")


# Alipay
def alipay_params(
    app_id: str, key: rsa.RSAPrivateKey, method: str, biz: dict[str, Any], **extra: str
) -> dict[str, str]:
    params = {
        "app_id": app_id,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "1.0",
        "biz_content": json.dumps(biz, separators=(",", ":")),
        **extra,
    }
    params["sign"] = sign(key, sorted_query(params, ("sign",)).encode())
    return params


def alipay_response(text: str, method: str) -> tuple[dict[str, Any], str, str | None]:
    """(the *_response object, its exact JSON text, the sign or None), the way SDKs cut the text."""
    key = method.replace(".", "_") + "_response"
    prefix = f'{{"{key}":'
    assert text.startswith(prefix), text[:200]
    sign_at = text.rfind(',"sign":"')
    inner = text[len(prefix) : sign_at] if sign_at >= 0 else text[len(prefix) : -1]
    signature = json.loads(text).get("sign")
    return json.loads(inner), inner, signature


# WeChat Pay v3
def wechat_authorization(mchid: str, serial: str, key: rsa.RSAPrivateKey, method: str, url: str, body: str) -> str:
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    signature = sign(key, f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n".encode())
    return (
        f'WECHATPAY2-SHA256-RSA2048 mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial}"'
    )


def wechat_signed(headers: Any, body: str, platform: rsa.RSAPublicKey) -> bool:
    message = f"{headers['Wechatpay-Timestamp']}\n{headers['Wechatpay-Nonce']}\n{body}\n".encode()
    return verify(platform, message, headers["Wechatpay-Signature"])


def wechat_decrypt(apiv3_key: bytes, resource: dict[str, str]) -> dict[str, Any]:
    plain = AESGCM(apiv3_key).decrypt(
        resource["nonce"].encode(), base64.b64decode(resource["ciphertext"]), resource["associated_data"].encode()
    )
    result: dict[str, Any] = json.loads(plain)
    return result


# UnionPay 5.1.0, signMethod 01
def unionpay_digest(params: dict[str, str]) -> bytes:
    return hashlib.sha256(sorted_query(params, ("signature",)).encode()).hexdigest().encode()


def unionpay_sign(params: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    return {**params, "signature": sign(key, unionpay_digest(params))}


def unionpay_verify(params: dict[str, str], platform: rsa.RSAPublicKey) -> bool:
    return verify(platform, unionpay_digest(params), params.get("signature", ""))


def unionpay_parse(text: str) -> dict[str, str]:
    """A synchronous answer: `k=v&k=v`, not URL-encoded (values never hold '&')."""
    pairs = (item.partition("=") for item in text.split("&") if item)
    return {k: v for k, _, v in pairs}


# card
def card_signature_ok(header: str, body: bytes, secret: str) -> bool:
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    if match is None:
        return False
    expected = hmac.new(secret.encode(), match.group(1).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(2))
