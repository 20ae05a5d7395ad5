"""The master key: encrypts API secrets at rest and keys every server-side MAC (page tokens).

It comes from PAYGATE_MASTER_KEY, or in dev mode from a key file generated once in the data directory (mode
0600). Every process of a stack (gateway, workers, CLI) reads the same key, so a page token issued by one worker
verifies on any other, and across restarts. Purposes never share key material: each derives its own key with
HKDF-SHA256 (`derive_key`), so a page-token key can never decrypt a secret and vice versa.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.errors import ConfigurationError
from runtime.settings import Settings

MASTER_KEY_FILE = "master.key"
_BAD_KEY = (
    "the master key must be 32 url-safe base64-encoded bytes (python -c "
    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
)


def master_key_text(settings: Settings, *, create: bool = True) -> str:
    """The configured master key (url-safe base64 of 32 bytes), creating the dev key file when allowed."""
    raw = settings.master_key
    if not raw:
        if settings.mode != "dev":
            raise ConfigurationError("PAYGATE_MASTER_KEY is required outside dev mode")
        path = settings.data_dir / MASTER_KEY_FILE
        if not path.exists():
            if not create:
                raise ConfigurationError(f"no master key at {path}; run a `paygate keys create` first")
            _write_private_file(path, Fernet.generate_key())
        raw = path.read_text().strip()
    return raw


def load_master_key(settings: Settings, *, create: bool = True) -> Fernet:
    """The Fernet key that encrypts API secrets at rest."""
    try:
        return Fernet(master_key_text(settings, create=create).encode())
    except (ValueError, TypeError):
        raise ConfigurationError(_BAD_KEY) from None


def derive_key(settings: Settings, purpose: str, *, create: bool = True) -> bytes:
    """A 32-byte key for one purpose (e.g. "page-token/v1"), derived from the master key with HKDF-SHA256."""
    try:
        material = base64.urlsafe_b64decode(master_key_text(settings, create=create).encode())
    except (ValueError, binascii.Error):
        raise ConfigurationError(_BAD_KEY) from None
    if len(material) != 32:
        raise ConfigurationError(_BAD_KEY)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"paygate/{purpose}".encode())
    return hkdf.derive(material)


def _write_private_file(path: Path, content: bytes) -> None:
    """Create `path` readable by its owner only; if another process won the race, keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, path)  # atomic, and fails if the file exists: first writer wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
