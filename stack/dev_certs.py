"""`paygate certs dev`: local certificate authorities and certificates for a dev stack (docs/security.md,
"TLS and mutual TLS").

Two authorities, so that a certificate made for callers can never open a worker:

- the *public* CA (`ca.pem`) signs the gateway's server certificate (what callers verify, `grpcurl -cacert`) and a
  sample caller client certificate (to try `PAYGATE_TLS_CLIENT_CA`);
- the *internal* CA (`internal-ca.pem`) signs the gateway's client certificate (`paygate-gateway`), the workers'
  server certificate (`paygate-worker`) and the notification edge's client certificate (`paygate-notify-edge`).

Idempotent: what exists, parses, is signed by the current CA, covers the asked-for names and lives more than
`RENEW_BEFORE` is kept; anything else is made again (a new CA re-issues everything it signed). Private keys are
written mode 0600 in a 0700 directory under the data dir, which is git-ignored.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.errors import ConfigurationError
from runtime.settings import Settings
from runtime.tls import (
    GATEWAY_PEER_NAME,
    NOTIFY_EDGE_PEER_NAME,
    WORKER_SERVER_NAME,
    public_server_credentials,
    worker_server_credentials,
)

CA_LIFETIME = datetime.timedelta(days=3650)
LEAF_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_HOSTS = 64


@dataclass(frozen=True)
class DevCerts:
    """Where `paygate certs dev` put everything; `paygate serve` hands these paths to its children."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca(self) -> Path:
        return self.path("ca.pem")

    @property
    def internal_ca(self) -> Path:
        return self.path("internal-ca.pem")

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.path(f"{name}.pem"), self.path(f"{name}.key")


@dataclass(frozen=True)
class _Leaf:
    name: str  # file stem
    common_name: str
    issuer: str  # "ca" or "internal-ca"
    usages: tuple[x509.ObjectIdentifier, ...]


_SERVER, _CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
LEAVES = (
    _Leaf("gateway", "paygate-gateway-public", "ca", (_SERVER,)),
    _Leaf("caller", "paygate-sample-caller", "ca", (_CLIENT,)),
    _Leaf("gateway-client", GATEWAY_PEER_NAME, "internal-ca", (_CLIENT,)),
    # Also a client: a worker's health probe presents it to the worker itself (deploy/kubernetes).
    _Leaf("worker", WORKER_SERVER_NAME, "internal-ca", (_SERVER, _CLIENT)),
    _Leaf("notify-edge", NOTIFY_EDGE_PEER_NAME, "internal-ca", (_CLIENT,)),
)


def certs_dir(data_dir: Path) -> Path:
    return data_dir / "tls"


def ensure_dev_certs(data_dir: Path, hosts: Sequence[str] = ()) -> tuple[DevCerts, list[str]]:
    """Make or reuse the dev CAs and certificates; returns where they are and the files (re)written."""
    directory = certs_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    wanted_hosts = list(dict.fromkeys([*DEFAULT_HOSTS, *(h.strip() for h in hosts if h.strip())]))
    if len(wanted_hosts) > MAX_HOSTS:
        raise ConfigurationError(f"at most {MAX_HOSTS} --hosts")
    now = datetime.datetime.now(datetime.UTC)
    written: list[str] = []
    authorities: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
    renewed: set[str] = set()
    for ca_name in ("ca", "internal-ca"):
        existing = _load(directory, ca_name)
        if existing is None or _expiring(existing[0], now):
            existing = _issue(f"Paygate dev {ca_name.replace('-', ' ')}", None, (), (), now)
            _write(directory, ca_name, *existing)
            written.append(f"{ca_name}.pem")
            renewed.add(ca_name)
        authorities[ca_name] = existing
    for leaf in LEAVES:
        names = wanted_hosts if leaf.name == "gateway" else [leaf.common_name]
        issuer_cert, issuer_key = authorities[leaf.issuer]
        existing = _load(directory, leaf.name)
        if (
            existing is None
            or leaf.issuer in renewed
            or _expiring(existing[0], now)
            or existing[0].issuer != issuer_cert.subject
            or not set(names) <= _names_of(existing[0])
            or _usages_of(existing[0]) != set(leaf.usages)
        ):
            cert, key = _issue(leaf.common_name, (issuer_cert, issuer_key), leaf.usages, names, now)
            _write(directory, leaf.name, cert, key)
            written.append(f"{leaf.name}.pem")
    return DevCerts(directory), written


def _expiring(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_after_utc - now < RENEW_BEFORE


def _usages_of(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _load(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The pair on disk, or None when absent or unusable (it is then made again)."""
    try:
        cert = x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / f"{name}.key").read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _issue(
    common_name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usages: Sequence[x509.ObjectIdentifier],
    names: Sequence[str],
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA (issuer None: self-signed) or a leaf certificate with the names as subject alternative names."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Paygate dev"), _cn(common_name)])
    issuer_name, signing_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a little clock skew between processes
        .not_valid_after(now + (CA_LIFETIME if issuer is None else LEAF_LIFETIME))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=0 if issuer is None else None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is None:
        usage_bits = {"key_cert_sign": True, "crl_sign": True, "digital_signature": True}
    else:
        usage_bits = {"key_cert_sign": False, "crl_sign": False, "digital_signature": True}
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), False)
        builder = builder.add_extension(_san(names), False)
    builder = builder.add_extension(
        x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usage_bits,
        ),
        True,
    )
    return builder.sign(signing_key, hashes.SHA256()), key


def _cn(common_name: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.COMMON_NAME, common_name)


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _atomic_write(directory / f"{name}.key", key_pem, 0o600)
    _atomic_write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _atomic_write(path: Path, content: bytes, mode: int) -> None:
    """Created with its final mode (a key is never readable by others, not even for a moment), then renamed."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    os.chmod(temporary, mode)  # the umask may have taken bits away
    temporary.replace(path)


def usage_text(certs: DevCerts, listen: str = "127.0.0.1:50051") -> str:
    """What `paygate certs dev` prints: the files, and how to call a dev stack with them."""
    cert, key = certs.pair("caller")
    return "\n".join(
        [
            f"dev certificates in {certs.directory}",
            f"  {certs.ca}  public CA: callers verify the gateway with it",
            f"  {certs.path('gateway.pem')}  the gateway's server certificate (localhost, 127.0.0.1, ::1, --hosts)",
            f"  {cert}  a sample caller client certificate (key {key.name})",
            f"  {certs.internal_ca}  internal CA: gateway <-> workers, notification edge -> workers",
            "call a dev stack over TLS:",
            f"  grpcurl -cacert {certs.ca} {listen} grpc.health.v1.Health/Check",
            f"  PaygateClient('{listen}', key_id, secret, root_certificates=Path('{certs.ca}').read_bytes())",
            "require client certificates on the public port (then add -cert/-key to grpcurl):",
            f"  PAYGATE_TLS_CLIENT_CA={certs.ca} paygate serve",
            f"  grpcurl -cacert {certs.ca} -cert {cert} -key {key} {listen} grpc.health.v1.Health/Check",
        ]
    )


# -- `paygate serve`: which certificate each child presents -----------------------------------------------------

TLS_VARIABLES = (
    "PAYGATE_TLS_CERT",
    "PAYGATE_TLS_KEY",
    "PAYGATE_TLS_CLIENT_CA",
    "PAYGATE_INTERNAL_TLS_CA",
    "PAYGATE_INTERNAL_TLS_CERT",
    "PAYGATE_INTERNAL_TLS_KEY",
)


def children_tls_env(settings: Settings, *, plaintext: bool) -> dict[str, dict[str, str]]:
    """The TLS variables of each kind of child ("gateway", "worker", "notify-edge").

    Material set in the environment is used as it is (in production it must be: the checks of runtime/tls.py
    refuse to go without). In dev mode what is missing comes from `ensure_dev_certs`, one certificate per role so
    that each process can prove only what it is. `plaintext` (dev only) blanks every variable."""
    if plaintext:
        if settings.mode == "production":
            raise ConfigurationError("--plaintext is for dev mode only; production mode serves TLS")
        blank = dict.fromkeys(TLS_VARIABLES, "")
        return {"gateway": blank, "worker": blank, "notify-edge": blank}
    # What `serve` was given (flags included, which its children would not see in the environment).
    given = {"PAYGATE_TLS_CERT": settings.tls_cert, "PAYGATE_TLS_KEY": settings.tls_key}
    given["PAYGATE_TLS_CLIENT_CA"] = settings.tls_client_ca
    roles: dict[str, dict[str, str]] = {
        "gateway": {k: v for k, v in given.items() if v},
        "worker": {},
        "notify-edge": {},
    }
    if settings.mode == "production" or (settings.tls_cert and settings.internal_tls_ca):
        _check(settings, roles["gateway"])
        return roles
    certs, _ = ensure_dev_certs(settings.data_dir)
    if not settings.tls_cert:
        cert, key = certs.pair("gateway")
        roles["gateway"].update({"PAYGATE_TLS_CERT": str(cert), "PAYGATE_TLS_KEY": str(key)})
    if not settings.internal_tls_ca:
        for role, stem in (("gateway", "gateway-client"), ("worker", "worker"), ("notify-edge", "notify-edge")):
            cert, key = certs.pair(stem)
            roles[role].update(
                {
                    "PAYGATE_INTERNAL_TLS_CA": str(certs.internal_ca),
                    "PAYGATE_INTERNAL_TLS_CERT": str(cert),
                    "PAYGATE_INTERNAL_TLS_KEY": str(key),
                }
            )
    _check(settings, roles["gateway"])
    return roles


def _check(settings: Settings, gateway_env: dict[str, str]) -> None:
    """Read the gateway's material as its process will, so that a missing or broken file (or none in production)
    stops `serve` before anything starts (exit 2, naming what to set) rather than in a crash loop."""
    gateway = settings.replace(**{name.removeprefix("PAYGATE_").lower(): value for name, value in gateway_env.items()})
    public_server_credentials(gateway)
    worker_server_credentials(gateway)
