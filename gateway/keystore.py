"""API keys: created, listed, limited, rotated and revoked by `paygate keys`, looked up by the gateway.

Secrets are stored only sealed by the master key ring (AES-256-GCM, bound to the key id; runtime/master_key.py).
The clear secret is printed once, at creation or rotation. Every encryption and decryption of a key secret goes
through `_seal` and `_open`. After `rotate`, the previous secret verifies too until its grace ends
(docs/security.md, "Key lifecycle").
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import or_, select, update

from gateway.key_limits import KeyLimits
from paygate.scopes import ALL_SCOPES, parse_scopes
from runtime import audit
from runtime.db import Database
from runtime.errors import ConfigurationError
from runtime.master_key import (  # re-exported: the gateway and CLI load it here
    MASTER_KEY_FILE,
    MasterKeyRing,
    UnreadableBlob,
    load_master_key,
)
from runtime.redis_support import connect
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
        client = connect(redis_url)  # a Sentinel or TLS URL too (runtime/redis_ha.py)
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
    limits: KeyLimits = field(default_factory=KeyLimits)
    previous_secret_expires_at: datetime | None = None  # a rotation's grace: the old secret verifies until then
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class KeyWithSecret:
    key: ApiKey
    secret: str
    previous_secret: str | None = None  # set only while its grace lasts (key.previous_secret_expires_at)

    def previous_valid_at(self, now: datetime) -> str | None:
        """The previous secret if its grace has not ended at `now`."""
        expires = self.key.previous_secret_expires_at
        if self.previous_secret is None or expires is None or now >= expires:
            return None
        return self.previous_secret


class KeyStore:
    def __init__(self, database: Database, ring: MasterKeyRing) -> None:
        self._db = database
        self._ring = ring

    def create(
        self, owner: str, scopes: str = ALL_SCOPES, limits: KeyLimits | None = None, *, actor: str = audit.SYSTEM
    ) -> KeyWithSecret:
        """A new key; `actor` (runtime/audit.py) is who made it, kept in the audit trail with it."""
        if not 1 <= len(owner) <= 64 or not set(owner) <= OWNER_ALPHABET:
            raise ValueError("the key name must be 1-64 chars of [A-Za-z0-9_.-]")
        parsed = parse_scopes(scopes)
        key_id = "key_" + secrets.token_hex(10)
        secret = _new_secret()
        limits = limits or KeyLimits()
        now = datetime.now(UTC)
        with self._db.write() as connection:
            connection.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    owner=owner,
                    scopes=",".join(parsed),
                    secret_ciphertext=self._seal(secret, key_id),
                    created_at=now,
                    revoked_at=None,
                    **{name: getattr(limits, name) for name in KeyLimits.column_names()},
                )
            )
            details: dict[str, str | int | bool | None] = {"name": owner, "scopes": ",".join(parsed)}
            details.update(_limit_details(limits))
            audit.record(connection, actor=actor, action="key.create", subject=key_id, details=details)
        return KeyWithSecret(ApiKey(key_id, owner, parsed, now, None, limits), secret)

    def list(self, limit: int = 1000) -> list[ApiKey]:
        with self._db.read() as connection:
            rows = connection.execute(select(api_keys).order_by(api_keys.c.created_at).limit(limit)).all()
        return [self._to_key(row) for row in rows]

    def revoke(self, key_id: str, *, actor: str = audit.SYSTEM) -> bool:
        """Revoke a key; False when there is no such key or it was already revoked. A revocation is audited."""
        with self._db.write() as connection:
            result = connection.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            if result.rowcount == 1:
                audit.record(connection, actor=actor, action="key.revoke", subject=key_id, details={})
        return result.rowcount == 1

    def set_limits(self, key_id: str, changes: Mapping[str, float | int | None], *, actor: str = audit.SYSTEM) -> bool:
        """Change some of a key's limits (None: back to the stack default); False when no active key has that id."""
        unknown = set(changes) - set(KeyLimits.column_names())
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        if not changes:
            raise ValueError("give at least one limit to change")
        with self._db.write() as connection:
            result = connection.execute(
                update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)).values(**changes)
            )
            if result.rowcount == 1:
                details = {name: _audited(changes[name]) for name in sorted(changes)}
                audit.record(connection, actor=actor, action="key.limits_set", subject=key_id, details=details)
        return result.rowcount == 1

    def rotate(self, key_id: str, grace: timedelta, *, actor: str = audit.SYSTEM) -> KeyWithSecret | None:
        """A new secret for an active key; the current one stays valid for `grace` (a previous one is dropped).
        None when there is no such active key."""
        if grace < timedelta(0):
            raise ValueError("the grace period cannot be negative")
        secret = _new_secret()
        now = datetime.now(UTC)
        with self._db.write() as connection:
            row = connection.execute(
                select(api_keys.c.secret_ciphertext).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            ).first()
            if row is None:
                return None
            connection.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(
                    secret_ciphertext=self._seal(secret, key_id),
                    previous_secret_ciphertext=row.secret_ciphertext,
                    previous_secret_expires_at=now + grace,
                )
            )
            details = {"grace_s": int(grace.total_seconds())}
            audit.record(connection, actor=actor, action="key.rotate", subject=key_id, details=details)
        found = self.lookup(key_id)
        assert found is not None
        return KeyWithSecret(found.key, secret)

    def record_last_used(self, used_at: Mapping[str, datetime]) -> None:
        """Note when keys were last used (the gateway calls this every few seconds, never per call). A time only
        ever moves forward, so gateways flushing in any order agree."""
        if not used_at:
            return
        with self._db.write() as connection:
            for key_id, when in sorted(used_at.items()):
                connection.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.key_id == key_id,
                        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < when),
                    )
                    .values(last_used_at=when)
                )

    def lookup(self, key_id: str) -> KeyWithSecret | None:
        with self._db.read() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            return None
        previous = None
        if row.previous_secret_ciphertext is not None:
            previous = self._open(row.previous_secret_ciphertext, key_id)
        return KeyWithSecret(self._to_key(row), self._open(row.secret_ciphertext, key_id), previous)

    def _seal(self, secret: str, key_id: str) -> bytes:
        """The one place a key secret is encrypted (docs/security.md, "Key lifecycle"), bound to its key's row."""
        return self._ring.seal(secret.encode(), purpose=API_KEY_SECRET_PURPOSE, context=key_id)

    def _open(self, blob: bytes, key_id: str) -> str:
        """The one place a key secret is decrypted."""
        try:
            return self._ring.open(blob, purpose=API_KEY_SECRET_PURPOSE, context=key_id).decode()
        except UnreadableBlob:
            raise ConfigurationError(
                f"key {key_id} cannot be decrypted with this master key; is PAYGATE_MASTER_KEY the one it was "
                "created with?"
            ) from None

    @staticmethod
    def _to_key(row: object) -> ApiKey:
        return ApiKey(
            key_id=row.key_id,  # type: ignore[attr-defined]
            owner=row.owner,  # type: ignore[attr-defined]
            scopes=tuple(row.scopes.split(",")),  # type: ignore[attr-defined]
            created_at=_utc(row.created_at),  # type: ignore[attr-defined,arg-type]
            revoked_at=_utc(row.revoked_at),  # type: ignore[attr-defined]
            limits=KeyLimits(**{name: getattr(row, name) for name in KeyLimits.column_names()}),
            previous_secret_expires_at=_utc(row.previous_secret_expires_at),  # type: ignore[attr-defined]
            last_used_at=_utc(row.last_used_at),  # type: ignore[attr-defined]
        )


def _new_secret() -> str:
    return "sk_" + secrets.token_urlsafe(32)


def _utc(value: datetime | None) -> datetime | None:
    """Times read back from SQLite and MySQL come without a zone; every time we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _audited(value: float | int | None) -> str | int | None:
    """A limit as the audit trail keeps it (runtime/audit.py takes no floats: "50.0" stays exact as text)."""
    return str(value) if isinstance(value, float) else value


def _limit_details(limits: KeyLimits | None) -> dict[str, str | int | bool | None]:
    """The limits a key was created with, for its audit entry (only those it sets itself)."""
    if limits is None:
        return {}
    values = {name: getattr(limits, name) for name in KeyLimits.column_names()}
    return {name: _audited(value) for name, value in values.items() if value is not None}
