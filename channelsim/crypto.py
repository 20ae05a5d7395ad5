"""The signature primitives the providers use: SHA256withRSA, AES-256-GCM, HMAC-SHA256."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def rsa_sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64."""
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, data: bytes, signature: object) -> bool:
    if not isinstance(signature, str) or not signature:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def sorted_pairs(params: Mapping[str, str], exclude: tuple[str, ...]) -> str:
    """ASCII-sorted `k=v&k=v` of the non-empty parameters, without the excluded keys (Alipay and UnionPay)."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in exclude and params[k] != "")


def unionpay_digest(params: Mapping[str, str]) -> bytes:
    """signMethod=01: lowercase hex SHA-256 of the sorted non-empty fields but `signature` (what gets RSA-signed)."""
    text = sorted_pairs(params, exclude=("signature",))
    return hashlib.sha256(text.encode()).hexdigest().encode()


def aes_gcm_encrypt(key: bytes, nonce: str, associated_data: str, plaintext: bytes) -> str:
    """WeChat Pay's AEAD_AES_256_GCM: base64(ciphertext || 16-byte tag)."""
    sealed = AESGCM(key).encrypt(nonce.encode(), plaintext, associated_data.encode())
    return base64.b64encode(sealed).decode()


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def forge(signature: str) -> str:
    """A signature of the right shape that does not verify: the callback-forging misbehaviour."""
    if not signature:
        return "forged"
    flipped = "A" if signature[0] != "A" else "B"
    return flipped + signature[1:]
