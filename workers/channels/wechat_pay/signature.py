"""WeChat Pay API v3 signatures and the callback cipher.

Requests: SHA256withRSA (PKCS#1 v1.5), base64, with the merchant key over

    METHOD\\nCANONICAL_URL\\ntimestamp\\nnonce\\nbody\\n

where CANONICAL_URL is the path and query below the API root (`/v3/pay/transactions/native`), and body is empty
for a GET. It travels as `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",
timestamp="…",serial_no="…"`.

Answers and callbacks: the same algorithm with the platform key over `timestamp\\nnonce\\nbody\\n`, taken from the
Wechatpay-Timestamp, -Nonce, -Signature and -Serial headers. Callback resources are sealed with AEAD_AES_256_GCM
under the APIv3 key: base64(ciphertext || 16-byte tag), with the resource's nonce and associated_data.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEME = "WECHATPAY2-SHA256-RSA2048"


def new_nonce() -> str:
    """32 random upper-case hex characters: unpredictable, so a captured signature cannot be replayed as new."""
    return secrets.token_hex(16).upper()


def canonical_url(base_url: str, url: str) -> str:
    """The part of `url` below the API root `base_url`: what WeChat Pay signs. A URL elsewhere is refused, so the
    merchant's signature is never sent to a host that is not the configured API."""
    if not url.startswith(base_url + "/"):
        raise ValueError(f"{url!r} is not under the API root {base_url!r}")
    return url[len(base_url) :]


def request_message(method: str, canonical: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return b"\n".join((method.encode(), canonical.encode(), timestamp.encode(), nonce.encode(), body)) + b"\n"


def answer_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def authorization(
    *,
    mchid: str,
    serial_no: str,
    key: rsa.RSAPrivateKey,
    method: str,
    canonical: str,
    body: bytes,
    timestamp: str,
    nonce: str,
) -> str:
    signature = rsa_sign(key, request_message(method, canonical, timestamp, nonce, body))
    return (
        f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


def decrypt(apiv3_key: bytes, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    """The plaintext of a callback resource; ValueError when it is not genuine (wrong key, tampered, truncated)."""
    try:
        sealed = base64.b64decode(ciphertext, validate=True)
        return AESGCM(apiv3_key).decrypt(nonce.encode(), sealed, associated_data.encode())
    except (InvalidTag, binascii.Error, ValueError) as exc:  # ValueError: a nonce of the wrong size, say
        raise ValueError(f"cannot decrypt the resource: {type(exc).__name__}") from exc
