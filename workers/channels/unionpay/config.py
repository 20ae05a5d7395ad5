"""What the UnionPay adapter needs to know about our merchant account and about UnionPay.

Pointing the adapter at the real gateway is a matter of these values only: production `base_url` is
`https://gateway.95516.com` (test: `https://gateway.test.95516.com`), and the settlement file comes from a
separate host, `https://filedownload.95516.com/`, set in `file_trans_url`. In development both point at the
channel simulator (`http://127.0.0.1:8090/unionpay`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class UnionPayConfig:
    base_url: str  # without a trailing slash; the adapter appends /gateway/api/...
    mer_id: str  # merId: the 15-character merchant code
    cert_id: str  # certId of our signing certificate (its serial number, in decimal)
    private_key: rsa.RSAPrivateKey = field(repr=False)  # signs every request
    platform_cert_id: str  # certId (serial number) of UnionPay's signing certificate we trust
    platform_public_key: rsa.RSAPublicKey = field(repr=False)  # verifies every answer and notification
    back_url: str  # our notification endpoint (backUrl), used when an order names none
    front_url: str  # where the payer's browser returns after paying (frontUrl)
    # The settlement-file endpoint; "" means {base_url}/gateway/api/fileTransRequest.do. The real one is another
    # host (https://filedownload.95516.com/), which is why it is configurable rather than derived.
    file_trans_url: str = ""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"UnionPay base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.mer_id or not self.cert_id or not self.platform_cert_id:
            raise ValueError("UnionPay mer_id, cert_id and platform_cert_id must all be set")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def statement_url(self) -> str:
        return self.file_trans_url or f"{self.base_url}/gateway/api/fileTransRequest.do"

    @classmethod
    def load(
        cls,
        *,
        base_url: str,
        mer_id: str,
        cert_id: str,
        private_key_path: str | Path,
        platform_cert_id: str,
        platform_key_path: str | Path,
        back_url: str,
        front_url: str,
        file_trans_url: str = "",
    ) -> UnionPayConfig:
        """Reads the keys from PEM files. UnionPay hands merchants a PKCS#12 (.pfx) bundle; convert it once with
        `openssl pkcs12 -in acp.pfx -nocerts -nodes` so that no password has to live in the configuration.
        The platform key file may hold either the public key or UnionPay's signing certificate."""
        return cls(
            base_url=base_url,
            mer_id=mer_id,
            cert_id=cert_id,
            private_key=_private_key(Path(private_key_path)),
            platform_cert_id=platform_cert_id,
            platform_public_key=_public_key(Path(platform_key_path)),
            back_url=back_url,
            front_url=front_url,
            file_trans_url=file_trans_url,
        )


def _private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: signMethod 01 needs an RSA private key")
    return key


def _public_key(path: Path) -> rsa.RSAPublicKey:
    data = path.read_bytes()
    key: object
    if b"BEGIN CERTIFICATE" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path}: UnionPay's signing key must be RSA")
    return key
