"""`paygate certs dev` (stack/dev_certs.py) in a real process, and how runtime/tls.py reads PEM files: idempotent,
private keys 0600, renewal near expiry, clear errors for missing, foreign and mismatched files."""

from __future__ import annotations

import datetime
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from runtime.errors import ConfigurationError
from runtime.settings import Settings
from runtime.tls import public_server_credentials, worker_channel_credentials, worker_server_credentials
from stack import dev_certs
from tests.support import REPO_ROOT

PAIRS = ("ca", "internal-ca", "gateway", "caller", "gateway-client", "worker", "notify-edge")


def _certs_dev(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", "certs", "dev", "--data-dir", str(data_dir), *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _contents(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _names(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in san}


def test_certs_dev_makes_everything_once_with_private_keys_0600(tmp_path: Path) -> None:
    first = _certs_dev(tmp_path)
    assert first.returncode == 0, first.stderr
    directory = tmp_path / "tls"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in PAIRS:
        assert stat.S_IMODE((directory / f"{name}.key").stat().st_mode) == 0o600, name
        assert (directory / f"{name}.pem").exists(), name
    assert f"-cacert {directory / 'ca.pem'}" in first.stdout  # how to call the stack with grpcurl
    assert _names(directory / "gateway.pem") >= {"localhost", "127.0.0.1", "::1"}
    assert _names(directory / "worker.pem") == {"paygate-worker"}

    before = _contents(directory)
    second = _certs_dev(tmp_path)
    assert second.returncode == 0, second.stderr
    assert "reused every certificate" in second.stdout
    assert _contents(directory) == before


def test_more_hosts_reissue_only_the_gateway_certificate(tmp_path: Path) -> None:
    assert _certs_dev(tmp_path).returncode == 0
    directory = tmp_path / "tls"
    before = _contents(directory)
    result = _certs_dev(tmp_path, "--hosts", "paygate.internal,10.1.2.3")
    assert result.returncode == 0, result.stderr
    assert "made: gateway.pem" in result.stdout
    assert {"paygate.internal", "10.1.2.3", "localhost"} <= _names(directory / "gateway.pem")
    after = _contents(directory)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"gateway.pem", "gateway.key"}


def test_a_certificate_near_expiry_is_renewed(tmp_path: Path) -> None:
    certs, _ = dev_certs.ensure_dev_certs(tmp_path)
    ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.path("ca.key").read_bytes(), password=None)
    # The caller certificate, issued so that it ends in 10 days: inside the 30-day renewal window.
    issued_at = datetime.datetime.now(datetime.UTC) - dev_certs.LEAF_LIFETIME + datetime.timedelta(days=10)
    usages = [x509.ObjectIdentifier("1.3.6.1.5.5.7.3.2")]
    cert, key = dev_certs._issue("paygate-sample-caller", (ca_cert, ca_key), usages, ["x"], issued_at)  # type: ignore[arg-type]
    dev_certs._write(certs.directory, "caller", cert, key)

    _, written = dev_certs.ensure_dev_certs(tmp_path)
    assert written == ["caller.pem"]
    renewed = x509.load_pem_x509_certificate(certs.path("caller.pem").read_bytes())
    assert renewed.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)


def test_certs_dev_is_refused_in_production_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stack", "certs", "dev", "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "PAYGATE_MODE": "production",
            "PAYGATE_DATABASE_URL": "postgresql://paygate@127.0.0.1:1/none",
            "PAYGATE_REDIS_URL": "redis://127.0.0.1:1/0",
            "PAYGATE_MASTER_KEY": "k" * 43 + "=",
            "PAYGATE_RISK_RULES": "off",
        },
    )
    assert result.returncode == 2
    assert "production uses certificates from your own PKI" in result.stderr
    assert not (tmp_path / "tls").exists()


# -- reading the files (runtime/tls.py) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dev_certs.DevCerts:
    certs, _ = dev_certs.ensure_dev_certs(tmp_path_factory.mktemp("certs"))
    return certs


def _settings(**tls: str) -> Settings:
    return Settings(**tls)  # type: ignore[arg-type]


def test_good_material_gives_credentials(made: dev_certs.DevCerts) -> None:
    gateway_cert, gateway_key = made.pair("gateway")
    public = _settings(tls_cert=str(gateway_cert), tls_key=str(gateway_key), tls_client_ca=str(made.ca))
    assert public_server_credentials(public) is not None
    worker_cert, worker_key = made.pair("worker")
    internal = _settings(
        internal_tls_ca=str(made.internal_ca), internal_tls_cert=str(worker_cert), internal_tls_key=str(worker_key)
    )
    assert worker_server_credentials(internal) is not None
    assert worker_channel_credentials(internal) is not None


def test_dev_mode_without_material_is_plaintext() -> None:
    assert public_server_credentials(Settings()) is None
    assert worker_server_credentials(Settings()) is None


def test_client_certificates_without_tls_are_refused(made: dev_certs.DevCerts) -> None:
    with pytest.raises(ConfigurationError, match="PAYGATE_TLS_CLIENT_CA needs PAYGATE_TLS_CERT"):
        public_server_credentials(_settings(tls_client_ca=str(made.ca)))


def test_missing_file_names_the_variable(made: dev_certs.DevCerts, tmp_path: Path) -> None:
    _, key = made.pair("gateway")
    with pytest.raises(ConfigurationError, match=r"PAYGATE_TLS_CERT: no such file .*absent\.pem"):
        public_server_credentials(_settings(tls_cert=str(tmp_path / "absent.pem"), tls_key=str(key)))


def test_unreadable_file_says_so(made: dev_certs.DevCerts, tmp_path: Path) -> None:
    cert, _ = made.pair("gateway")
    with pytest.raises(ConfigurationError, match="PAYGATE_TLS_KEY: cannot read"):
        public_server_credentials(_settings(tls_cert=str(cert), tls_key=str(tmp_path)))  # a directory


def test_a_file_that_is_not_pem_is_refused(made: dev_certs.DevCerts, tmp_path: Path) -> None:
    cert, _ = made.pair("gateway")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    with pytest.raises(ConfigurationError, match=r"PAYGATE_TLS_KEY: .* is not a PEM file"):
        public_server_credentials(_settings(tls_cert=str(cert), tls_key=str(garbage)))


def test_a_key_of_another_certificate_is_refused(made: dev_certs.DevCerts) -> None:
    cert, _ = made.pair("gateway")
    _, other_key = made.pair("caller")
    with pytest.raises(ConfigurationError, match=r"PAYGATE_TLS_KEY .* is not the key of PAYGATE_TLS_CERT"):
        public_server_credentials(_settings(tls_cert=str(cert), tls_key=str(other_key)))


def test_an_expired_certificate_is_refused(made: dev_certs.DevCerts, tmp_path: Path) -> None:
    ca_cert = x509.load_pem_x509_certificate(made.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(made.path("ca.key").read_bytes(), password=None)
    long_ago = datetime.datetime.now(datetime.UTC) - 2 * dev_certs.LEAF_LIFETIME
    usages = [x509.ObjectIdentifier("1.3.6.1.5.5.7.3.1")]
    cert, key = dev_certs._issue("localhost", (ca_cert, ca_key), usages, ["localhost"], long_ago)  # type: ignore[arg-type]
    dev_certs._write(tmp_path, "old", cert, key)
    with pytest.raises(ConfigurationError, match=r"PAYGATE_TLS_CERT: .*old\.pem expired on"):
        public_server_credentials(_settings(tls_cert=str(tmp_path / "old.pem"), tls_key=str(tmp_path / "old.key")))


def test_a_ca_file_without_a_certificate_is_refused(made: dev_certs.DevCerts) -> None:
    cert, key = made.pair("worker")
    with pytest.raises(ConfigurationError, match=r"PAYGATE_INTERNAL_TLS_CA: .* holds no readable certificate"):
        worker_server_credentials(
            _settings(internal_tls_ca=str(key), internal_tls_cert=str(cert), internal_tls_key=str(key))
        )


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"tls_cert": "a.pem"}, "set both PAYGATE_TLS_CERT and PAYGATE_TLS_KEY"),
        ({"internal_tls_ca": "ca.pem"}, "set all of PAYGATE_INTERNAL_TLS_CA"),
    ],
)
def test_incomplete_sets_are_refused_at_start(tls: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings(**tls)  # type: ignore[arg-type]
