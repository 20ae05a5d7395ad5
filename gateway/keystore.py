"""API keys: created, listed and revoked by `paygate keys`, looked up by the gateway.

Secrets are stored only sealed by the master key ring (AES-256-GCM, bound to the key id; runtime/master_key.py).
The clear secret is printed once, at creation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy import select, update

from paygate.scopes import ALL_SCOPES, parse_scopes
from runtime.db import Database
from runtime.errors import ConfigurationError
from runtime.master_key import (  # re-exported: the gateway and CLI load it here
    MASTER_KEY_FILE,
    MasterKeyRing,
    UnreadableBlob,
    load_master_key,
)
from runtime.schema import api_keys

__all__ = ["MASTER_KEY_FILE", "ApiKey", "KeyStore", "KeyWithSecret", "announce_key_change", "load_master_key"]
OWNER_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
KEYS_GENERATION = "keys:generation"
API_KEY_SECRET_PURPOSE = "api-key-secret"  # noqa: S105 - the ring's purpose label, not a secret


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
    def __init__(self, database: Database, ring: MasterKeyRing) -> None:
        self._db = database
        self._ring = ring

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
                    secret_ciphertext=self._ring.seal(secret.encode(), purpose=API_KEY_SECRET_PURPOSE, context=key_id),
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
            secret = self._ring.open(row.secret_ciphertext, purpose=API_KEY_SECRET_PURPOSE, context=key_id).decode()
        except UnreadableBlob:
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
