"""Fenced Redis locks on a real Redis, and the fenced SQL write that makes a stale holder harmless."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
import redis

from runtime.db import Database
from runtime.errors import LockContention
from workers.domain.types import AccountKind
from workers.execution.locks import FencedLocks
from workers.ledger import accounts as ledger


@pytest.fixture
def locks(redis_client: redis.Redis, redis_prefix: str) -> FencedLocks:
    return FencedLocks(redis_client, redis_prefix)


def test_acquire_release_and_fencing_tokens_increase(locks: FencedLocks) -> None:
    first = locks.acquire("account:1", lease_ms=5000, wait_ms=100)
    assert locks.try_acquire("account:1", lease_ms=5000) is None
    assert locks.release(first)
    second = locks.acquire("account:1", lease_ms=5000, wait_ms=100)
    assert second.fence > first.fence
    assert locks.release(second)


def test_release_by_a_stale_holder_does_not_free_the_new_holders_lock(locks: FencedLocks) -> None:
    stale = locks.acquire("account:2", lease_ms=50, wait_ms=100)
    time.sleep(0.1)  # the lease runs out
    current = locks.acquire("account:2", lease_ms=5000, wait_ms=100)
    assert not locks.release(stale)  # compare-and-delete: not ours any more
    assert locks.try_acquire("account:2", lease_ms=5000) is None  # still held by `current`
    assert locks.release(current)


def test_waiting_is_bounded_and_observed(locks: FencedLocks, redis_client: redis.Redis, redis_prefix: str) -> None:
    seen: list[str] = []
    observed = FencedLocks(redis_client, redis_prefix, observe_wait=lambda outcome, s: seen.append(outcome))
    held = observed.acquire("account:3", lease_ms=5000, wait_ms=10)
    with pytest.raises(LockContention, match="retry"):
        observed.acquire("account:3", lease_ms=5000, wait_ms=30)
    assert seen == ["acquired", "timeout"]
    observed.release(held)


def test_a_holder_paused_past_its_lease_cannot_write(database: Database, locks: FencedLocks) -> None:
    now = datetime.now(UTC)
    user = f"u-{uuid.uuid4().hex[:8]}"
    with database.write() as connection:
        wallet = ledger.ensure_account(connection, AccountKind.WALLET, user, "CNY", now)
        ledger.apply_unfenced(connection, wallet, 1000)
    resource = f"account:{wallet.account_id}"

    paused = locks.acquire(resource, lease_ms=50, wait_ms=100)
    time.sleep(0.1)  # the holder "pauses" past its lease
    successor = locks.acquire(resource, lease_ms=5000, wait_ms=100)
    assert successor.fence > paused.fence

    with database.write() as connection:
        assert ledger.debit_fenced(connection, wallet.account_id, 100, successor.fence) is ledger.DebitOutcome.APPLIED
    with database.write() as connection:  # the paused holder wakes up and tries its write
        outcome = ledger.debit_fenced(connection, wallet.account_id, 100, paused.fence)
    assert outcome is ledger.DebitOutcome.STALE_FENCE
    with database.read() as connection:
        account = ledger.find_account(connection, AccountKind.WALLET, user, "CNY")
    assert account is not None
    assert account.balance_minor == 900  # only the successor's debit happened
    assert account.fence == successor.fence
    locks.release(successor)


def test_lost_fence_counters_recover_through_raise_fence(
    database: Database, locks: FencedLocks, redis_client: redis.Redis, redis_prefix: str
) -> None:
    now = datetime.now(UTC)
    with database.write() as connection:
        wallet = ledger.ensure_account(connection, AccountKind.WALLET, f"u-{uuid.uuid4().hex[:8]}", "CNY", now)
        ledger.apply_unfenced(connection, wallet, 1000)
    resource = f"account:{wallet.account_id}"
    lease = locks.acquire(resource, lease_ms=5000, wait_ms=100)
    with database.write() as connection:
        assert ledger.debit_fenced(connection, wallet.account_id, 1, lease.fence + 10) is ledger.DebitOutcome.APPLIED
    locks.release(lease)
    # Redis forgot (restart without persistence): the next token is below what the database has seen.
    redis_client.delete(f"{redis_prefix}{{{resource}}}:fence")
    low = locks.acquire(resource, lease_ms=5000, wait_ms=100)
    with database.write() as connection:
        assert ledger.debit_fenced(connection, wallet.account_id, 1, low.fence) is ledger.DebitOutcome.STALE_FENCE
    locks.release(low)
    locks.raise_fence(resource, lease.fence + 10)
    fresh = locks.acquire(resource, lease_ms=5000, wait_ms=100)
    with database.write() as connection:
        assert ledger.debit_fenced(connection, wallet.account_id, 1, fresh.fence) is ledger.DebitOutcome.APPLIED
    locks.release(fresh)
