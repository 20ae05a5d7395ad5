"""Keyed idempotent execution (docs/ledger.md, "One operation, one transaction").

A keyed operation runs as: claim the idempotency key → (the operation) take the fenced Redis locks of the
accounts it debits, sorted, then one write transaction → commit → release. `Executor.run` owns the claim and the
retries; an operation's `attempt(claim)` returns its result after its transaction committed.

A whole attempt is retried only for reasons that prove nothing was committed: a stale fence, a deadlock or
serialization failure, a concurrent change to the same payment, a lost race on a unique key.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

from runtime.errors import Unavailable
from runtime.metrics import WorkerMetrics
from workers.domain.types import Caller
from workers.execution.idempotency import Claim, Idempotency
from workers.execution.locks import FencedLocks, LockLease
from workers.ledger.movement import StaleFence

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
T = TypeVar("T")


class ConcurrentChange(Exception):
    """The row changed between our read and our guarded update (another refund won): read again."""


def is_transient(error: DBAPIError) -> bool:
    """Deadlocks and serialization failures: the transaction was rolled back and may simply be retried."""
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate in {"40001", "40P01"}:
        return True
    args: tuple[object, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in {1213, 1205}  # MySQL: deadlock, lock wait timeout


class Executor:
    """Claims, leases and retries: what every keyed operation shares."""

    def __init__(
        self,
        idempotency: Idempotency,
        locks: FencedLocks,
        *,
        lock_lease_ms: int,
        lock_wait_ms: int,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.idempotency = idempotency
        self.locks = locks
        self._lock_lease_ms = lock_lease_ms
        self._lock_wait_ms = lock_wait_ms
        self._metrics = metrics

    @property
    def lock_lease_ms(self) -> int:
        return self._lock_lease_ms

    def run(
        self,
        caller: Caller,
        scope: str,
        key: str,
        fingerprint: str,
        attempt: Callable[[Claim], T],
        replay: Callable[[Claim, bytes], T],
    ) -> T:
        """`attempt(claim)` under the key, retried while nothing was committed; an earlier result is replayed."""
        with self.idempotency.claim(caller.owner, scope, key, fingerprint) as claim:
            if claim.replay is not None:
                return replay(claim, claim.replay)
            for attempt_number in range(1, MAX_ATTEMPTS + 1):
                try:
                    return attempt(claim)
                except StaleFence as stale:
                    log.warning("stale lock fence; retrying", extra={"fields": {"resource": stale.resource}})
                    self.count_retry("stale_fence")
                    self.locks.raise_fence(stale.resource, stale.database_fence)
                except ConcurrentChange:
                    self.count_retry("concurrent_change")  # another refund of the same payment committed first
                    _pause_before(attempt_number)  # jittered, so racers that collided do not collide again
                except IntegrityError:
                    # Lost a race on a unique key: the winner's result is the answer.
                    earlier = self.idempotency.lookup(caller.owner, scope, key, fingerprint)
                    if earlier is not None:
                        return replay(claim, earlier)
                    raise
                except DBAPIError as error:
                    if not is_transient(error):
                        raise
                    self.count_retry("deadlock")  # rolled back by the database: nothing was written
                    _pause_before(attempt_number)
        raise Unavailable(
            f"{scope} {key!r} could not be applied after {MAX_ATTEMPTS} attempts under contention; "
            f"nothing was moved — retry with the same {scope} id"
        )

    @contextmanager
    def leases(self, *resources: str) -> Iterator[dict[str, LockLease]]:
        """Fenced leases on `resources`, taken in canonical (sorted) order so that two operations locking the
        same accounts never wait on each other in a cycle; always released, newest first."""
        taken: dict[str, LockLease] = {}
        try:
            for resource in sorted(set(resources)):
                taken[resource] = self.locks.acquire(resource, self._lock_lease_ms, self._lock_wait_ms)
            yield taken
        finally:
            for lease in reversed(list(taken.values())):
                self.locks.release_quietly(lease)

    def count_retry(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.ledger_retries.labels(reason).inc()


def _pause_before(next_after: int) -> None:
    """A random pause growing with the attempts made, none after the last one (nothing follows it)."""
    if next_after < MAX_ATTEMPTS:
        time.sleep(random.uniform(0.005, 0.05) * next_after)
