"""Alipay settings. Pointing Paygate at the real Alipay is a change of these values only: the gateway URL, the app
id, the seller id (the merchant's 2088… PID), the two key files and the notification URL.

This is the only place that reads key files; the provider itself does no I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PRODUCTION_GATEWAY = "https://openapi.alipay.com/gateway.do"
# RSA2 names SHA256withRSA with a key of at least 2048 bits; a shorter key is a misconfiguration.
_MIN_KEY_BITS = 2048


@dataclass(frozen=True)
class AlipayConfig:
    gateway_url: str
    app_id: str
    seller_id: str  # the PID Alipay names as seller_id in notifications; checked on every one
    app_private_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_public_key: rsa.RSAPublicKey = field(repr=False)
    notify_url: str

    def __post_init__(self) -> None:
        for name in ("gateway_url", "app_id", "seller_id", "notify_url"):
            if not getattr(self, name):
                raise ValueError(f"AlipayConfig.{name} must not be empty")
        if "?" in self.gateway_url:
            raise ValueError("AlipayConfig.gateway_url must not carry a query string: parameters are appended to it")
        if self.app_private_key.key_size < _MIN_KEY_BITS or self.alipay_public_key.key_size < _MIN_KEY_BITS:
            raise ValueError(f"RSA2 keys must have at least {_MIN_KEY_BITS} bits")

    @classmethod
    def load(
        cls,
        gateway_url: str,
        app_id: str,
        seller_id: str,
        app_private_key_path: str | Path,
        alipay_public_key_path: str | Path,
        notify_url: str,
    ) -> AlipayConfig:
        return cls(
            gateway_url=gateway_url,
            app_id=app_id,
            seller_id=seller_id,
            app_private_key=load_private_key(Path(app_private_key_path).read_bytes()),
            alipay_public_key=load_public_key(Path(alipay_public_key_path).read_bytes()),
            notify_url=notify_url,
        )


def _bare_der(data: bytes) -> bytes:
    """Alipay's key tool and its console hand keys out as one bare base64 line, without PEM armour."""
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError("key file is neither PEM nor bare base64 DER") from exc


def load_private_key(data: bytes) -> rsa.RSAPrivateKey:
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(_bare_der(data), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the app private key must be an RSA key")
    return key


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    if b"-----BEGIN" in data:
        key = serialization.load_pem_public_key(data)
    else:
        key = serialization.load_der_public_key(_bare_der(data))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Alipay public key must be an RSA key")
    return key
