"""The master key ring: seals secrets at rest (AES-256-GCM) and keys every server-side MAC (page tokens).

docs/security.md, "Secrets at rest and the master key". The current key comes from PAYGATE_MASTER_KEY (or
PAYGATE_MASTER_KEY_FILE), or in dev mode from a key file generated once in the data directory (mode 0600); outside
dev mode a process refuses to start without one. Previous keys (PAYGATE_MASTER_KEY_PREVIOUS, comma-separated, or
PAYGATE_MASTER_KEY_PREVIOUS_FILE, one per line) still open what they sealed but never seal: that is how the master
key is rotated, and `paygate keys rewrap` then re-seals every blob under the current key.

A sealed blob is `b"pgk1:" + key id (8 bytes) + nonce (12 bytes) + AES-256-GCM ciphertext and tag`. The key id
is a fingerprint of the master key, so a blob names the key that sealed it; the associated data is the purpose and
the row id, so a blob copied into another column or row does not open. Blobs written before the ring (Fernet,
starting `gAAAAA`) still open under any key of the ring and are rewritten by the rewrap.

Purposes never share key material: the sealing key and each `derive_key` purpose are derived with HKDF-SHA256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.errors import ConfigurationError
from runtime.settings import Settings

MASTER_KEY_FILE = "master.key"
ENVELOPE = b"pgk1:"
LEGACY_FERNET = b"gAAAAA"  # a Fernet token: version byte 0x80 and a timestamp, in url-safe base64
KEY_ID_BYTES = 8
NONCE_BYTES = 12
MAX_PREVIOUS_KEYS = 16
_BAD_KEY = (
    "must be 32 url-safe base64-encoded bytes (python -c "
    "'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
)


class UnreadableBlob(ValueError):
    """No key of the ring opens this blob for this purpose and row (wrong key, or a blob moved or altered)."""


def _hkdf(material: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"paygate/{info}".encode()).derive(material)


def _parse_key(text: str, where: str) -> bytes:
    try:
        material = base64.urlsafe_b64decode(text.strip().encode())
    except (ValueError, binascii.Error):
        raise ConfigurationError(f"{where} {_BAD_KEY}") from None
    if len(material) != 32:
        raise ConfigurationError(f"{where} {_BAD_KEY}")
    return material


class _MasterKey:
    """One master key: its id, its sealing cipher and its legacy Fernet."""

    def __init__(self, material: bytes) -> None:
        self.material = material
        self.key_id = hashlib.sha256(b"paygate/master-key-id\x00" + material).digest()[:KEY_ID_BYTES]
        self.aead = AESGCM(_hkdf(material, "master-seal/v1"))
        self.fernet = Fernet(base64.urlsafe_b64encode(material))


def _associated_data(purpose: str, context: str) -> bytes:
    return b"paygate/sealed/v1\x00" + purpose.encode() + b"\x00" + context.encode()


class MasterKeyRing:
    """The current master key (seals and opens) and previous ones (open only)."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self._current = _MasterKey(current)
        others = [_MasterKey(m) for m in previous if m != current]
        self._by_id = {key.key_id: key for key in (*others, self._current)}
        self._all = [self._current, *others]

    @classmethod
    def load(cls, settings: Settings, *, create: bool = True) -> MasterKeyRing:
        """The ring of the settings; ConfigurationError with a clear message when a key is missing or malformed."""
        current = _parse_key(master_key_text(settings, create=create), _current_key_source(settings))
        lines = [*settings.master_key_previous.reveal().split(",")]
        if settings.master_key_previous_file:
            previous_file = Path(settings.master_key_previous_file)
            lines += _read_key_file(previous_file, "PAYGATE_MASTER_KEY_PREVIOUS_FILE").splitlines()
        texts = [line.strip() for line in lines if line.strip()]
        if len(texts) > MAX_PREVIOUS_KEYS:
            raise ConfigurationError(f"at most {MAX_PREVIOUS_KEYS} previous master keys; rewrap and drop old ones")
        previous = [
            _parse_key(text, f"previous master key #{n} (PAYGATE_MASTER_KEY_PREVIOUS or _FILE)")
            for n, text in enumerate(texts, start=1)
        ]
        return cls(current, previous)

    @property
    def current_key_id(self) -> str:
        return self._current.key_id.hex()

    @property
    def key_ids(self) -> list[str]:
        return [key.key_id.hex() for key in self._all]

    def seal(self, data: bytes, *, purpose: str, context: str = "") -> bytes:
        """`data` sealed under the current key, bound to `purpose` and `context` (the row's id)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.aead.encrypt(nonce, data, _associated_data(purpose, context))
        return ENVELOPE + self._current.key_id + nonce + sealed

    def open(self, blob: bytes, *, purpose: str, context: str = "") -> bytes:
        blob = bytes(blob)
        if blob.startswith(LEGACY_FERNET):
            for key in self._all:
                try:
                    return key.fernet.decrypt(blob)
                except InvalidToken:
                    continue
            raise UnreadableBlob("no master key of the ring opens this (legacy) blob")
        header = len(ENVELOPE) + KEY_ID_BYTES
        if not blob.startswith(ENVELOPE) or len(blob) < header + NONCE_BYTES + 16:
            raise UnreadableBlob("not a sealed blob")
        found = self._by_id.get(blob[len(ENVELOPE) : header])
        if found is None:
            raise UnreadableBlob(
                f"sealed under master key {blob[len(ENVELOPE) : header].hex()}, which is not in the ring "
                f"(current {self.current_key_id}); is PAYGATE_MASTER_KEY_PREVIOUS missing it?"
            )
        nonce, sealed = blob[header : header + NONCE_BYTES], blob[header + NONCE_BYTES :]
        try:
            return found.aead.decrypt(nonce, sealed, _associated_data(purpose, context))
        except InvalidTag:
            raise UnreadableBlob("the blob does not open for this purpose and row (moved or altered)") from None

    def needs_rewrap(self, blob: bytes) -> bool:
        """Whether `blob` is not sealed under the current key (legacy, or an older key)."""
        blob = bytes(blob)
        return not blob.startswith(ENVELOPE + self._current.key_id)

    def rewrap(self, blob: bytes, *, purpose: str, context: str = "") -> bytes:
        return self.seal(self.open(blob, purpose=purpose, context=context), purpose=purpose, context=context)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (e.g. "page-token/v1"), derived from the CURRENT master key."""
        return _hkdf(self._current.material, purpose)

    def derived_keys(self, purpose: str) -> list[bytes]:
        """The purpose's key under every master key of the ring, the current one first (to recognise a MAC
        made before a rotation)."""
        return [_hkdf(key.material, purpose) for key in self._all]


def master_key_text(settings: Settings, *, create: bool = True) -> str:
    """The configured current master key (url-safe base64 of 32 bytes), creating the dev key file when allowed."""
    if settings.master_key:
        return settings.master_key.reveal()
    if settings.master_key_file:
        return _read_key_file(Path(settings.master_key_file), "PAYGATE_MASTER_KEY_FILE").strip()
    if settings.mode != "dev":
        raise ConfigurationError("PAYGATE_MASTER_KEY (or PAYGATE_MASTER_KEY_FILE) is required outside dev mode")
    path = settings.data_dir / MASTER_KEY_FILE
    if not path.exists():
        if not create:
            raise ConfigurationError(f"no master key at {path}; run a `paygate keys create` first")
        _write_private_file(path, base64.urlsafe_b64encode(os.urandom(32)))
    return path.read_text().strip()


def _read_key_file(path: Path, variable: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{variable}: cannot read the key file {path}: {type(error).__name__}") from None


def _current_key_source(settings: Settings) -> str:
    if settings.master_key:
        return "the master key (PAYGATE_MASTER_KEY)"
    if settings.master_key_file:
        return f"the master key in {settings.master_key_file} (PAYGATE_MASTER_KEY_FILE)"
    return f"the dev master key {settings.data_dir / MASTER_KEY_FILE}"


def load_master_key(settings: Settings, *, create: bool = True) -> MasterKeyRing:
    """The master key ring (the name is kept for the callers that loaded the Fernet key before the ring)."""
    return MasterKeyRing.load(settings, create=create)


def derive_key(settings: Settings, purpose: str, *, create: bool = True) -> bytes:
    """A 32-byte key for one purpose, derived from the current master key with HKDF-SHA256 (docs/decisions.md
    #101: a page token made before a master-key rotation stops verifying)."""
    return _hkdf(_parse_key(master_key_text(settings, create=create), "the master key"), purpose)


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
