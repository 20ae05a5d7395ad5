"""Key material of every simulated provider, generated on first start under DATA_DIR/channel-sim/.

Both sides' keys live here: the *platform* keys (the provider's own, which sign responses and callbacks) and the
*merchant* keys (a real merchant generates these and uploads the public half; here they are made for development so
the adapters can read them). Private keys are written with mode 0600 and never logged.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from channelsim.common import digits, token

PROVIDERS = ("alipay", "wechatpay", "unionpay")


@dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey
    public: rsa.RSAPublicKey
    serial: int
    private_path: Path
    public_path: Path
    cert_path: Path

    @property
    def serial_hex(self) -> str:
        """WeChat Pay's serial_no / Wechatpay-Serial: the certificate serial number, uppercase hex."""
        return f"{self.serial:X}"

    @property
    def cert_pem(self) -> str:
        return self.cert_path.read_text()


@dataclass(frozen=True)
class Keys:
    directory: Path
    identity: dict[str, str]
    merchant: dict[str, KeyPair]
    platform: dict[str, KeyPair]
    wechat_apiv3_key: bytes
    card_api_key: str
    card_webhook_secret: str
    sim_secret: bytes

    def path(self, name: str) -> Path:
        return self.directory / name


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _self_signed(key: rsa.RSAPrivateKey, common_name: str, serial: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )


def _pair(directory: Path, provider: str, role: str, serial_bits: int) -> KeyPair:
    stem = directory / f"{provider}-{role}"
    private_path = stem.with_name(stem.name + "-private.pem")
    public_path = stem.with_name(stem.name + "-public.pem")
    cert_path = stem.with_name(stem.name + "-cert.pem")
    if not private_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_secret(private_path, pem)
        serial = secrets.randbits(serial_bits) | (1 << (serial_bits - 1))
        cert = _self_signed(key, f"channel-sim {provider} {role}", serial)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        public_path.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{private_path} is not an RSA key")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return KeyPair(loaded, loaded.public_key(), cert.serial_number, private_path, public_path, cert_path)


def _secret_file(path: Path, fresh: bytes) -> bytes:
    """The secret stored at `path`; `fresh` is written there first if there is none yet."""
    if not path.exists():
        _write_secret(path, fresh)
    return path.read_bytes()


def _identity(path: Path) -> dict[str, str]:
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    identity = {
        "alipay_app_id": "2021" + digits(12),
        "alipay_seller_id": "2088" + digits(12),
        "wechatpay_mchid": "19" + digits(8),
        "wechatpay_appid": "wx" + secrets.token_hex(8),
        "unionpay_mer_id": "777" + digits(12),
        "card_account": "acct_" + token(16),
    }
    path.write_text(json.dumps(identity, indent=2) + "\n")
    return identity


def load_or_create(data_dir: Path) -> Keys:
    """Keys of every provider; generated once, then reused on every later start."""
    directory = data_dir / "channel-sim"
    directory.mkdir(parents=True, exist_ok=True)
    key_dir = directory / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    # WeChat serials are 160-bit hex strings; UnionPay certIds are ~11-digit decimals.
    bits = {"alipay": 64, "wechatpay": 159, "unionpay": 36}
    merchant = {p: _pair(key_dir, p, "merchant", bits[p]) for p in PROVIDERS}
    platform = {p: _pair(key_dir, p, "platform", bits[p]) for p in PROVIDERS}
    apiv3 = _secret_file(key_dir / "wechatpay-apiv3.key", token(32).encode())
    api_key = _secret_file(key_dir / "card-api.key", ("sk_test_" + token(32)).encode())
    webhook = _secret_file(key_dir / "card-webhook.secret", ("whsec_" + token(32)).encode())
    sim_secret = _secret_file(key_dir / "sim.secret", secrets.token_bytes(32))
    return Keys(
        directory=directory,
        identity=_identity(directory / "identity.json"),
        merchant=merchant,
        platform=platform,
        wechat_apiv3_key=apiv3.strip(),
        card_api_key=api_key.decode().strip(),
        card_webhook_secret=webhook.decode().strip(),
        sim_secret=sim_secret,
    )


def merchant_config(keys: Keys, base_url: str) -> dict[str, Any]:
    """What an adapter needs, written to merchant.json: ids, serials and *paths* of keys (never the keys)."""
    ident, mer, plat = keys.identity, keys.merchant, keys.platform
    up = f"{base_url}/unionpay/gateway/api"
    return {
        "base_url": base_url,
        "control_url": f"{base_url}/control",
        "alipay": {
            "gateway_url": f"{base_url}/alipay/gateway.do",
            "app_id": ident["alipay_app_id"],
            "seller_id": ident["alipay_seller_id"],
            "sign_type": "RSA2",
            "merchant_private_key": str(mer["alipay"].private_path),
            "merchant_public_key": str(mer["alipay"].public_path),
            "platform_public_key": str(plat["alipay"].public_path),
        },
        "wechatpay": {
            "base_url": f"{base_url}/wechatpay",
            "mchid": ident["wechatpay_mchid"],
            "appid": ident["wechatpay_appid"],
            "merchant_serial_no": mer["wechatpay"].serial_hex,
            "merchant_private_key": str(mer["wechatpay"].private_path),
            "merchant_certificate": str(mer["wechatpay"].cert_path),
            "platform_serial_no": plat["wechatpay"].serial_hex,
            "platform_public_key": str(plat["wechatpay"].public_path),
            "platform_certificate": str(plat["wechatpay"].cert_path),
            "apiv3_key_path": str(keys.path("keys/wechatpay-apiv3.key")),
        },
        "unionpay": {
            "base_url": f"{base_url}/unionpay",
            "front_trans_url": f"{up}/frontTransReq.do",
            "app_trans_url": f"{up}/appTransReq.do",
            "back_trans_url": f"{up}/backTransReq.do",
            "query_trans_url": f"{up}/queryTrans.do",
            "file_trans_url": f"{base_url}/unionpay/filedownload",
            "mer_id": ident["unionpay_mer_id"],
            "merchant_cert_id": str(mer["unionpay"].serial),
            "merchant_private_key": str(mer["unionpay"].private_path),
            "merchant_certificate": str(mer["unionpay"].cert_path),
            "platform_cert_id": str(plat["unionpay"].serial),
            "platform_public_key": str(plat["unionpay"].public_path),
            "platform_certificate": str(plat["unionpay"].cert_path),
        },
        "card": {
            "base_url": f"{base_url}/card",
            "account_id": ident["card_account"],
            "api_key_path": str(keys.path("keys/card-api.key")),
            "webhook_secret_path": str(keys.path("keys/card-webhook.secret")),
        },
    }
