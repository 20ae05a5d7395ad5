"""Redis locks with fencing tokens (docs/ledger.md, "One operation, one transaction" and "Why Redis is not trusted
for correctness").

A Redis lock is a performance tool, not a correctness guarantee: a holder can pause past its lease. So every
acquisition also hands out a fencing token (an INCR, in the same Lua script as the SET NX PX), and every
balance write the holder makes is conditional on `fence < token` in SQL. A stale holder's write matches no row.

If Redis loses its counters (a restart without persistence), tokens start again below what the database has
seen; the ledger then rejects the writes as stale and `raise_fence` lifts the counter past the database's
value, so the next attempt succeeds. Correctness never depends on Redis remembering anything.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from runtime.errors import LockContention
from runtime.redis_support import ScriptCall, register_script

log = logging.getLogger(__name__)

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""

# Compare-and-delete: only the holder of `token` may remove the key (shared with the idempotency guard).
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_RAISE_FENCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
"""

# Polling back-off while waiting for a held lock: starts short (locks are held for milliseconds).
_FIRST_BACKOFF_S = 0.002
_MAX_BACKOFF_S = 0.05
# The RetryInfo of LOCK_CONTENTION: the lock's remaining lease, within these bounds.
_MIN_RETRY_MS = 50
_MAX_RETRY_MS = 1000


@dataclass(frozen=True)
class LockLease:
    resource: str
    token: str
    fence: int


class FencedLocks:
    """Acquire/release fenced leases on named resources (e.g. `account:42`)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        observe_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._acquire = register_script(client, "lock_acquire", _ACQUIRE)
        self._release = register_script(client, "compare_and_delete", COMPARE_AND_DELETE)
        self._raise_fence = register_script(client, "lock_raise_fence", _RAISE_FENCE)
        self._observe_wait = observe_wait or (lambda outcome, seconds: None)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def _keys(self, resource: str) -> tuple[str, str]:
        # One hash tag per resource keeps the lock and its fence counter in one Redis Cluster slot.
        tag = f"{self._prefix}{{{resource}}}"
        return f"{tag}:lock", f"{tag}:fence"

    def try_acquire(self, resource: str, lease_ms: int) -> LockLease | None:
        token = secrets.token_hex(16)
        fence = int(self._acquire(keys=self._keys(resource), args=[token, lease_ms]))
        return LockLease(resource, token, fence) if fence else None

    def acquire(self, resource: str, lease_ms: int, wait_ms: int) -> LockLease:
        """Wait at most `wait_ms` for the lock; LockContention (ABORTED, retryable) after that."""
        started = time.monotonic()
        deadline = started + wait_ms / 1000
        backoff = _FIRST_BACKOFF_S
        while True:
            lease = self.try_acquire(resource, lease_ms)
            now = time.monotonic()
            if lease is not None:
                self._observe_wait("acquired", now - started)
                return lease
            if now >= deadline:
                self._observe_wait("timeout", now - started)
                raise LockContention(
                    f"{resource} is busy with another operation; retry the call with the same idempotency key",
                    retry_after_ms=self._retry_delay_ms(resource),
                )
            time.sleep(min(backoff, deadline - now))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _retry_delay_ms(self, resource: str) -> int:
        """The held lock's remaining lease, clamped: when it is worth trying again (at most one lease)."""
        try:
            remaining = int(self._client.pttl(self._keys(resource)[0]))
        except redis.RedisError:
            remaining = _MAX_RETRY_MS
        return min(max(remaining, _MIN_RETRY_MS), _MAX_RETRY_MS)

    def acquire_calls(self, resources: list[str], token: str, lease_ms: int) -> list[ScriptCall]:
        """One try of each lock, to run in a caller's pipeline (`runtime.redis_support.run_scripts`): group commit
        takes a whole batch's locks, with its in-flight guards, in one round trip (docs/ledger.md, "Group commit").
        Each reply is a fence (taken) or 0 (busy): see `lease_from`."""
        return [(self._acquire, self._keys(resource), (token, lease_ms)) for resource in resources]

    def observe_batch(self, taken: int, seconds: float) -> None:
        """Count the locks a batch took in its one round trip, like `acquire` counts its own (a busy one goes to
        the one-at-a-time path, which counts it there)."""
        for _ in range(taken):
            self._observe_wait("acquired", seconds)

    @staticmethod
    def lease_from(resource: str, token: str, reply: object) -> LockLease | None:
        fence = int(reply)  # type: ignore[call-overload]
        return LockLease(resource, token, fence) if fence else None

    def release_calls(self, leases: list[LockLease]) -> list[ScriptCall]:
        """Compare-and-delete of each lease, to run in a caller's pipeline; a failure there only means the leases
        expire by themselves."""
        return [(self._release, (self._keys(lease.resource)[0],), (lease.token,)) for lease in leases]

    def release(self, lease: LockLease) -> bool:
        """Release only if we still hold it (compare-and-delete); False when the lease had already expired."""
        return bool(self._release(keys=[self._keys(lease.resource)[0]], args=[lease.token]))

    def release_quietly(self, lease: LockLease) -> None:
        """Release after the work is done, whatever Redis says: the work's outcome must not turn into an error
        because Redis vanished afterwards (the lease then simply expires)."""
        try:
            self.release(lease)
        except redis.RedisError as error:
            log.warning("lock release failed; the lease will expire", extra={"fields": {"error": type(error).__name__}})

    def raise_fence(self, resource: str, at_least: int) -> None:
        self._raise_fence(keys=[self._keys(resource)[1]], args=[at_least])
