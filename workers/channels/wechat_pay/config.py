"""WeChat Pay API v3 settings. Pointing Paygate at the real WeChat Pay is a change of these values only: base URL
(https://api.mch.weixin.qq.com), mchid, appid, the merchant key and its certificate serial, the platform key (a
"WeChat Pay public key" PEM, or a platform certificate) with its serial (PUB_KEY_ID_… or the certificate's), the
APIv3 key and the notification URL.

This is the only place that reads key files; the provider itself does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PRODUCTION_BASE_URL = "https://api.mch.weixin.qq.com"
_APIV3_KEY_BYTES = 32  # AEAD_AES_256_GCM
_MIN_KEY_BITS = 2048  # the scheme is WECHATPAY2-SHA256-RSA2048


@dataclass(frozen=True)
class WechatPayConfig:
    base_url: str  # the API root: request paths (/v3/...) are appended to it and signed relative to it
    mchid: str
    appid: str
    merchant_private_key: rsa.RSAPrivateKey = field(repr=False)
    merchant_serial_no: str  # the serial of the merchant API certificate that goes with the key
    platform_public_key: rsa.RSAPublicKey = field(repr=False)
    platform_serial: str  # what Wechatpay-Serial must name on answers and callbacks
    apiv3_key: bytes = field(repr=False)
    notify_url: str

    def __post_init__(self) -> None:
        for name in ("base_url", "mchid", "appid", "merchant_serial_no", "platform_serial", "notify_url"):
            if not getattr(self, name):
                raise ValueError(f"WechatPayConfig.{name} must not be empty")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"WechatPayConfig.base_url must be a plain http(s) URL, not {self.base_url!r}")
        if self.base_url.endswith("/"):
            raise ValueError("WechatPayConfig.base_url must not end with '/': paths start with one")
        if len(self.apiv3_key) != _APIV3_KEY_BYTES:
            raise ValueError(f"the APIv3 key must be {_APIV3_KEY_BYTES} bytes")
        if self.merchant_private_key.key_size < _MIN_KEY_BITS or self.platform_public_key.key_size < _MIN_KEY_BITS:
            raise ValueError(f"WeChat Pay RSA keys must have at least {_MIN_KEY_BITS} bits")

    @classmethod
    def load(
        cls,
        base_url: str,
        mchid: str,
        appid: str,
        merchant_private_key_path: str | Path,
        merchant_serial_no: str,
        platform_public_key_path: str | Path,
        platform_serial: str,
        apiv3_key_path: str | Path,
        notify_url: str,
    ) -> WechatPayConfig:
        return cls(
            base_url=base_url,
            mchid=mchid,
            appid=appid,
            merchant_private_key=_private_key(Path(merchant_private_key_path).read_bytes()),
            merchant_serial_no=merchant_serial_no,
            platform_public_key=_public_key(Path(platform_public_key_path).read_bytes()),
            platform_serial=platform_serial,
            # The merchant platform shows the APIv3 key as 32 printable characters; a trailing newline is editing.
            apiv3_key=Path(apiv3_key_path).read_bytes().strip(),
            notify_url=notify_url,
        )


def _private_key(data: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(data, password=None)  # apiclient_key.pem
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant private key must be an RSA key")
    return key


def _public_key(data: bytes) -> rsa.RSAPublicKey:
    """A "WeChat Pay public key" (pub_key.pem) or a downloaded platform certificate: both carry the RSA key."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        from_certificate = x509.load_pem_x509_certificate(data).public_key()
        if isinstance(from_certificate, rsa.RSAPublicKey):
            return from_certificate
    else:
        key = serialization.load_pem_public_key(data)
        if isinstance(key, rsa.RSAPublicKey):
            return key
    raise ValueError("the platform key must be an RSA key")
