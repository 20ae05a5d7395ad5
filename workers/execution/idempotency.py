"""Idempotency keys (docs/ledger.md, "One operation, one transaction"): same key + same request → the original
result; different request → ALREADY_EXISTS; while the first call is still running → ABORTED (retry later).

The durable truth is the `idempotency_records` row, written in the same transaction as the money movement and
protected by a unique constraint: even if the Redis guard below is lost, a key can only ever commit once.
The Redis guard (SET NX PX) only turns a concurrent duplicate into a fast ABORTED instead of a wasted attempt.

The guard lives as long as its holder (docs/ledger.md, "When a worker dies"): its TTL is the lock lease, and a
renewer thread in the holder's process extends every guard the process holds every lease/3. A holder that is
SIGKILLed stops renewing, so its guard vanishes at most one lease after its last renewal, and a retry then gets a
definitive answer. An ABORTED answer carries a RetryInfo: the guard's remaining life, clamped to
[RETRY_MIN_MS, RETRY_MAX_MS] (a live holder usually finishes within milliseconds).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import Connection, bindparam, select, text

from runtime.db import Database
from runtime.errors import AlreadyExists, RequestInFlight
from runtime.redis_support import ScriptCall, register_script, run_scripts
from runtime.schema import idempotency_records
from workers.codec.grammar import quote
from workers.execution.locks import COMPARE_AND_DELETE

# SET NX PX, or (when held) the remaining life of the holder's guard in ms, in one round trip.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -100
end
return redis.call('PTTL', KEYS[1])
"""
# Extend a guard only while we still hold it (its value is our token).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
CLAIMED = -100
RETRY_MIN_MS = 50
RETRY_MAX_MS = 1000
MAX_RENEWED_PER_ROUND = 10_000

# Built once, bound per call (see workers/ledger/accounts.py for why).
_FIND = select(
    idempotency_records.c.request_hash,
    idempotency_records.c.resource_id,
    idempotency_records.c.response,
).where(
    idempotency_records.c.owner == bindparam("owner"),
    idempotency_records.c.scope == bindparam("scope"),
    idempotency_records.c.idempotency_key == bindparam("key"),
)
_FIND_MANY = select(
    idempotency_records.c.owner,
    idempotency_records.c.idempotency_key,
    idempotency_records.c.request_hash,
    idempotency_records.c.resource_id,
    idempotency_records.c.response,
).where(
    # The unique index is (owner, scope, key): both IN lists keep the lookup on it.
    idempotency_records.c.owner.in_(bindparam("owners", expanding=True)),
    idempotency_records.c.scope == bindparam("scope"),
    idempotency_records.c.idempotency_key.in_(bindparam("keys", expanding=True)),
)
# PostgreSQL: one index probe per wanted pair. With the IN lists above, a planner without statistics (a new table,
# a server with autovacuum off, right after a bulk load) uses only the index's (owner, scope) prefix and filters
# every record of the owner: 8 ms at 60,000 records and growing, against 0.25 ms for this form, whose every
# probe is an equality on all three columns (docs/benchmarks.md). The arrays keep it one statement whatever the
# batch size.
_FIND_MANY_POSTGRESQL = text(
    "SELECT i.owner, i.idempotency_key, i.request_hash, i.resource_id, i.response"
    " FROM unnest(CAST(:owners AS text[]), CAST(:keys AS text[])) AS wanted(owner, idempotency_key)"
    " CROSS JOIN LATERAL (SELECT r.owner, r.idempotency_key, r.request_hash, r.resource_id, r.response"
    " FROM idempotency_records AS r WHERE r.owner = wanted.owner AND r.scope = :scope"
    " AND r.idempotency_key = wanted.idempotency_key) AS i"
)
_INSERT = idempotency_records.insert()

log = logging.getLogger(__name__)


def _in_flight(scope: str, key: str, remaining_ms: int) -> RequestInFlight:
    """Held: retry after the rest of the guard's life, within bounds (-2, gone meanwhile, and -1, no TTL, clamp)."""
    delay_ms = RETRY_MAX_MS if remaining_ms == -1 else remaining_ms
    delay_ms = min(max(delay_ms, RETRY_MIN_MS), RETRY_MAX_MS)
    return RequestInFlight(
        f"a call with {scope} id {quote(key)} is still in progress; retry with the same id in {delay_ms} ms",
        retry_after_ms=delay_ms,
    )


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
        self._release = register_script(client, "compare_and_delete", COMPARE_AND_DELETE)
        self._claim = register_script(client, "idempotency_claim", _CLAIM)
        self._renew = register_script(client, "idempotency_renew", _RENEW)
        # token -> guard key of every guard this process holds. Keyed by token, not by guard key: a holder whose
        # guard expired (Redis was unreachable for a lease) must not unregister a newer claim of the same key.
        self._held: dict[str, str] = {}
        self._held_lock = threading.Lock()  # guards _held and _renewer
        self._stopping = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def lease_ms(self) -> int:
        return self._lease_ms

    def close(self) -> None:
        """Stop the renewer for good (guards still held then expire by themselves within one lease)."""
        self._stopping.set()
        with self._held_lock:
            renewer = self._renewer
        if renewer is not None:
            renewer.join(timeout=self._lease_ms / 1000)

    def stop_renewing_for_test(self) -> None:
        """What a SIGKILL does to the renewer, without killing the process (tests only)."""
        self.close()

    def renewer_running(self) -> bool:
        """Whether a renewer thread is alive now (it runs only while this process holds guards)."""
        with self._held_lock:
            return self._renewer is not None and self._renewer.is_alive()

    def _register(self, token: str, guard_key: str) -> None:
        """Hand a guard to the renewer, starting it if none runs (it exits by itself once nothing is held)."""
        with self._held_lock:
            self._held[token] = guard_key
            if self._renewer is None and not self._stopping.is_set():
                renewer = threading.Thread(target=self._renew_forever, name="inflight-guard-renewer", daemon=True)
                renewer.start()
                self._renewer = renewer

    def _unregister(self, token: str) -> None:
        with self._held_lock:
            self._held.pop(token, None)

    def _renew_forever(self) -> None:
        # Every lease/3, so a guard survives two failed rounds in a row (docs/ledger.md, "When a worker dies").
        interval_s = self._lease_ms / 3000
        while not self._stopping.wait(interval_s):
            with self._held_lock:
                if not self._held:
                    # Idle: end the thread rather than wake forever; the next claim starts a new one. Decided under
                    # the lock that _register takes, so a guard is never registered with no renewer running.
                    self._renewer = None
                    return
                held = list(self._held.items())[:MAX_RENEWED_PER_ROUND]
            self._renew_round(held)

    def _renew_round(self, held: list[tuple[str, str]]) -> None:
        """Extend every guard still ours by one lease, in one pipelined round trip; failures only log."""
        try:
            calls: list[ScriptCall] = [(self._renew, (key,), (token, self._lease_ms)) for token, key in held]
            extended = run_scripts(self._client, calls)
        except redis.RedisError as error:
            # Correctness never depends on the guard: the unique constraint on the record decides (docs/ledger.md,
            # "Why Redis is not trusted for correctness"). A guard not renewed for a lease simply expires.
            log.warning("in-flight guard renewal failed", extra={"fields": {"error": type(error).__name__}})
            return
        with self._held_lock:
            # Not extended yet still held (not released since our snapshot): it expired first — Redis was
            # unreachable or this process paused past a lease — so a duplicate may now run and lose on the record.
            lost = sum(
                1
                for (token, _), extended_one in zip(held, extended, strict=True)
                if not extended_one and token in self._held
            )
        if lost:
            log.warning("in-flight guards expired while held", extra={"fields": {"guards": lost}})

    def find(self, connection: Connection, owner: str, scope: str, key: str) -> StoredResult | None:
        row = connection.execute(_FIND, {"owner": owner, "scope": scope, "key": key}).first()
        return None if row is None else StoredResult(row.request_hash, row.resource_id, bytes(row.response))

    def find_many(
        self, connection: Connection, scope: str, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredResult]:
        """The stored results of these (owner, key) pairs in one query (group commit)."""
        if not keys:
            return {}
        if connection.dialect.name == "postgresql":
            pairs = sorted(keys)
            params = {"owners": [owner for owner, _ in pairs], "keys": [key for _, key in pairs], "scope": scope}
            rows = connection.execute(_FIND_MANY_POSTGRESQL, params)
        else:
            owners, plain_keys = sorted({owner for owner, _ in keys}), sorted({key for _, key in keys})
            rows = connection.execute(_FIND_MANY, {"owners": owners, "scope": scope, "keys": plain_keys})
        found = {
            (row.owner, row.idempotency_key): StoredResult(row.request_hash, row.resource_id, bytes(row.response))
            for row in rows
        }
        return {pair: stored for pair, stored in found.items() if pair in keys}

    def replay(self, stored: StoredResult, claim_hash: str, scope: str, key: str) -> bytes:
        if stored.request_hash != claim_hash:
            raise AlreadyExists(
                f"{scope} id {quote(key)} was already used for a different request; "
                f"use a new {scope} id, or repeat the original request exactly"
            )
        return stored.response

    def lookup(self, owner: str, scope: str, key: str, request_hash: str) -> bytes | None:
        with self._db.read() as connection:
            stored = self.find(connection, owner, scope, key)
        return None if stored is None else self.replay(stored, request_hash, scope, key)

    def guard_key(self, owner: str, scope: str, key: str) -> str:
        return f"{self._prefix}inflight:{{{owner}:{scope}:{key}}}"

    def claim_calls(self, claims: list[Claim], token: str) -> list[ScriptCall]:
        """The in-flight guards of these claims, to take in a caller's pipeline (group commit); read each reply
        with `in_flight_error`. The caller releases them with `release_calls` before it answers."""
        return [(self._claim, (self.guard_key(c.owner, c.scope, c.key),), (token, self._lease_ms)) for c in claims]

    @staticmethod
    def in_flight_error(claim: Claim, reply: object) -> RequestInFlight | None:
        """None when the guard was taken; else the ABORTED a call gets while the key is held elsewhere."""
        remaining_ms = int(reply)  # type: ignore[call-overload]
        return None if remaining_ms == CLAIMED else _in_flight(claim.scope, claim.key, remaining_ms)

    def release_calls(self, claims: list[Claim], token: str) -> list[ScriptCall]:
        return [(self._release, (self.guard_key(c.owner, c.scope, c.key),), (token,)) for c in claims]

    @contextmanager
    def claim(self, owner: str, scope: str, key: str, request_hash: str) -> Iterator[Claim]:
        """Yield a Claim: with `replay` set if the key already completed, else holding the in-flight guard."""
        earlier = self.lookup(owner, scope, key, request_hash)
        if earlier is not None:
            yield Claim(owner, scope, key, request_hash, replay=earlier)
            return
        guard_key = self.guard_key(owner, scope, key)
        token = secrets.token_hex(16)
        remaining_ms = int(self._claim(keys=[guard_key], args=[token, self._lease_ms]))
        if remaining_ms != CLAIMED:
            raise _in_flight(scope, key, remaining_ms)
        try:
            self._register(token, guard_key)
            # It may have completed between our first look and taking the guard.
            earlier = self.lookup(owner, scope, key, request_hash)
            yield Claim(owner, scope, key, request_hash, replay=earlier)
        finally:
            self._unregister(token)
            try:
                self._release(keys=[guard_key], args=[token])
            except redis.RedisError:
                # The work's outcome stands; the guard expires by itself after lease_ms.
                log.warning("in-flight guard release failed; it will expire")

    def record(self, connection: Connection, claim: Claim, resource_id: str, response: bytes, now: datetime) -> None:
        """Store the result inside the operation's own transaction (unique on owner, scope, key)."""
        connection.execute(_INSERT, self._values(claim, resource_id, response, now))

    def record_many(self, connection: Connection, results: list[tuple[Claim, str, bytes, datetime]]) -> None:
        """Many results in one statement, inside a group commit's transaction."""
        connection.execute(_INSERT, [self._values(*result) for result in results])

    def _values(self, claim: Claim, resource_id: str, response: bytes, now: datetime) -> dict[str, object]:
        return {
            "owner": claim.owner,
            "scope": claim.scope,
            "idempotency_key": claim.key,
            "request_hash": claim.request_hash,
            "resource_id": resource_id,
            "response": response,
            "created_at": now,
            "expires_at": now + self._retention,
        }
