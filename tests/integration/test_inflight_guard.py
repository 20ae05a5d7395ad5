"""The in-flight guard lives as long as its holder (docs/ledger.md, "When a worker dies"), on a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from paygate.db import Database
from paygate.errors import RequestInFlight
from tests.support import wait_until
from workers.idempotency import RETRY_MAX_MS, RETRY_MIN_MS, Idempotency

LEASE_MS = 300


@pytest.fixture
def guards(database: Database, redis_client: redis.Redis, redis_prefix: str) -> Iterator[Idempotency]:
    idempotency = Idempotency(database, redis_client, redis_prefix, lease_ms=LEASE_MS, retention=timedelta(days=1))
    yield idempotency
    idempotency.close()


def _guard_key(prefix: str, owner: str, key: str) -> str:
    return f"{prefix}inflight:{{{owner}:order:{key}}}"


def _renewals_seen(client: redis.Redis, key: str, rounds: int) -> int:
    """Watch the guard's TTL for `rounds` lease periods; count the times it went back up (a renewal)."""
    seen, last = 0, client.pttl(key)
    for _ in range(rounds * 10):
        time.sleep(LEASE_MS / 10_000)
        now = client.pttl(key)
        if now > last:
            seen += 1
        last = now
    return seen


def test_a_live_holder_keeps_its_guard_for_many_leases(
    guards: Idempotency, redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = uuid.uuid4().hex
    guard = _guard_key(redis_prefix, "o", key)
    with guards.claim("o", "order", key, "h") as claim:
        assert claim.replay is None
        assert _renewals_seen(redis_client, guard, rounds=5) >= 3  # renewed: it outlived five leases
        assert redis_client.exists(guard)
        with pytest.raises(RequestInFlight) as contender, guards.claim("o", "order", key, "h"):
            pass
        assert RETRY_MIN_MS <= contender.value.retry_after_ms <= RETRY_MAX_MS
        assert "retry with the same id in" in contender.value.message
    assert not redis_client.exists(guard)  # released


def test_a_dead_holders_guard_expires_within_one_lease_then_the_key_is_free(
    database: Database, redis_client: redis.Redis, redis_prefix: str, guards: Idempotency
) -> None:
    holder = Idempotency(database, redis_client, redis_prefix, lease_ms=LEASE_MS, retention=timedelta(days=1))
    key = uuid.uuid4().hex
    guard = _guard_key(redis_prefix, "o", key)
    claim = holder.claim("o", "order", key, "h")
    claim.__enter__()  # taken, and never released: the holder "dies" below
    holder.stop_renewing_for_test()  # what SIGKILL does to its renewer
    remaining = redis_client.pttl(guard)
    assert 0 < remaining <= LEASE_MS
    with pytest.raises(RequestInFlight) as contender, guards.claim("o", "order", key, "h"):
        pass
    assert contender.value.retry_after_ms <= max(remaining, RETRY_MIN_MS)
    wait_until(lambda: not redis_client.exists(guard), attempts=100, interval_s=LEASE_MS / 10_000, what="expiry")
    with guards.claim("o", "order", key, "h") as fresh:
        assert fresh.replay is None
