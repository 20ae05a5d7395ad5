"""Idempotency keys (DESIGN.md §3): same key + same request → the original result; different request →
ALREADY_EXISTS; while the first call is still running → ABORTED (retry later).

The durable truth is the `idempotency_records` row, written in the same transaction as the money movement and
protected by a unique constraint: even if the Redis guard below is lost, a key can only ever commit once.
The Redis guard (SET NX PX) only turns a concurrent duplicate into a fast ABORTED instead of a wasted attempt.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import Connection, bindparam, select

from paygate.db import Database
from paygate.errors import AlreadyExists, RequestInFlight
from paygate.schema import idempotency_records
from workers.locks import COMPARE_AND_DELETE

# Built once, bound per call (see workers/ledger.py for why).
_FIND = select(
    idempotency_records.c.request_hash,
    idempotency_records.c.resource_id,
    idempotency_records.c.response,
).where(
    idempotency_records.c.owner == bindparam("owner"),
    idempotency_records.c.scope == bindparam("scope"),
    idempotency_records.c.idempotency_key == bindparam("key"),
)
_INSERT = idempotency_records.insert()

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredResult:
    request_hash: str
    resource_id: str
    response: bytes


@dataclass(frozen=True)
class Claim:
    """The right to perform one keyed operation, or (when `replay` is set) its earlier result."""

    owner: str
    scope: str
    key: str
    request_hash: str
    replay: bytes | None = None


class Idempotency:
    def __init__(
        self, database: Database, client: redis.Redis, prefix: str, *, lease_ms: int, retention: timedelta
    ) -> None:
        self._db = database
        self._client = client
        self._prefix = prefix
        self._lease_ms = lease_ms
        self._retention = retention
        self._release = client.register_script(COMPARE_AND_DELETE)

    def find(self, connection: Connection, owner: str, scope: str, key: str) -> StoredResult | None:
        row = connection.execute(_FIND, {"owner": owner, "scope": scope, "key": key}).first()
        return None if row is None else StoredResult(row.request_hash, row.resource_id, bytes(row.response))

    def replay(self, stored: StoredResult, claim_hash: str, scope: str, key: str) -> bytes:
        if stored.request_hash != claim_hash:
            raise AlreadyExists(
                f"{scope} id {key!r} was already used for a different request; "
                f"use a new {scope} id, or repeat the original request exactly"
            )
        return stored.response

    def lookup(self, owner: str, scope: str, key: str, request_hash: str) -> bytes | None:
        with self._db.read() as connection:
            stored = self.find(connection, owner, scope, key)
        return None if stored is None else self.replay(stored, request_hash, scope, key)

    @contextmanager
    def claim(self, owner: str, scope: str, key: str, request_hash: str) -> Iterator[Claim]:
        """Yield a Claim: with `replay` set if the key already completed, else holding the in-flight guard."""
        earlier = self.lookup(owner, scope, key, request_hash)
        if earlier is not None:
            yield Claim(owner, scope, key, request_hash, replay=earlier)
            return
        guard_key = f"{self._prefix}inflight:{{{owner}:{scope}:{key}}}"
        token = secrets.token_hex(16)
        if not self._client.set(guard_key, token, nx=True, px=self._lease_ms):
            raise RequestInFlight(
                f"a call with {scope} id {key!r} is still in progress; retry shortly with the same id"
            )
        try:
            # It may have completed between our first look and taking the guard.
            earlier = self.lookup(owner, scope, key, request_hash)
            yield Claim(owner, scope, key, request_hash, replay=earlier)
        finally:
            try:
                self._release(keys=[guard_key], args=[token])
            except redis.RedisError:
                # The work's outcome stands; the guard expires by itself after lease_ms.
                log.warning("in-flight guard release failed; it will expire")

    def record(self, connection: Connection, claim: Claim, resource_id: str, response: bytes, now: datetime) -> None:
        """Store the result inside the operation's own transaction (unique on owner, scope, key)."""
        connection.execute(
            _INSERT,
            {
                "owner": claim.owner,
                "scope": claim.scope,
                "idempotency_key": claim.key,
                "request_hash": claim.request_hash,
                "resource_id": resource_id,
                "response": response,
                "created_at": now,
                "expires_at": now + self._retention,
            },
        )
