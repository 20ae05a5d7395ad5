"""API keys: created, listed and revoked by `paygate keys`, looked up by the gateway.

Secrets are stored only as Fernet ciphertext under the master key (PAYGATE_MASTER_KEY, or in dev mode a key
file generated in the data directory with mode 0600). The clear secret is printed once, at creation.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, update

from paygate.db import Database
from paygate.errors import ConfigurationError
from paygate.schema import api_keys
from paygate.scopes import ALL_SCOPES, parse_scopes
from paygate.settings import Settings

MASTER_KEY_FILE = "master.key"
OWNER_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def load_master_key(settings: Settings, *, create: bool = True) -> Fernet:
    """The Fernet key that encrypts API secrets at rest."""
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
    try:
        return Fernet(raw.encode() if isinstance(raw, str) else raw)
    except (ValueError, TypeError):
        raise ConfigurationError(
            "the master key must be 32 url-safe base64-encoded bytes (python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None


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


KEYS_GENERATION = "keys:generation"


def announce_key_change(redis_url: str, prefix: str) -> bool:
    """Tell running gateways that keys changed (they re-read revocations on their next call).

    Best effort: False when Redis is unreachable, in which case gateways notice within key_cache_ttl_s.
    """
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            client.incr(f"{prefix}{KEYS_GENERATION}")
        finally:
            client.close()
    except redis.RedisError:
        return False
    return True


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    owner: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class KeyWithSecret:
    key: ApiKey
    secret: str


class KeyStore:
    def __init__(self, database: Database, fernet: Fernet) -> None:
        self._db = database
        self._fernet = fernet

    def create(self, owner: str, scopes: str = ALL_SCOPES) -> KeyWithSecret:
        if not 1 <= len(owner) <= 64 or not set(owner) <= OWNER_ALPHABET:
            raise ValueError("the key name must be 1-64 chars of [A-Za-z0-9_.-]")
        parsed = parse_scopes(scopes)
        key_id = "key_" + secrets.token_hex(10)
        secret = "sk_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._db.write() as connection:
            connection.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    owner=owner,
                    scopes=",".join(parsed),
                    secret_ciphertext=self._fernet.encrypt(secret.encode()),
                    created_at=now,
                    revoked_at=None,
                )
            )
        return KeyWithSecret(ApiKey(key_id, owner, parsed, now, None), secret)

    def list(self, limit: int = 1000) -> list[ApiKey]:
        with self._db.read() as connection:
            rows = connection.execute(select(api_keys).order_by(api_keys.c.created_at).limit(limit)).all()
        return [self._to_key(row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when there is no such key or it was already revoked."""
        with self._db.write() as connection:
            result = connection.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return result.rowcount == 1

    def lookup(self, key_id: str) -> KeyWithSecret | None:
        with self._db.read() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            return None
        try:
            secret = self._fernet.decrypt(row.secret_ciphertext).decode()
        except InvalidToken:
            raise ConfigurationError(
                f"key {key_id} cannot be decrypted with this master key; is PAYGATE_MASTER_KEY the one it was "
                "created with?"
            ) from None
        return KeyWithSecret(self._to_key(row), secret)

    @staticmethod
    def _to_key(row: object) -> ApiKey:
        return ApiKey(
            key_id=row.key_id,  # type: ignore[attr-defined]
            owner=row.owner,  # type: ignore[attr-defined]
            scopes=tuple(row.scopes.split(",")),  # type: ignore[attr-defined]
            created_at=row.created_at,  # type: ignore[attr-defined]
            revoked_at=row.revoked_at,  # type: ignore[attr-defined]
        )
