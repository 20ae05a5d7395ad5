"""The in-flight guard lives as long as its holder (docs/ledger.md, "When a worker dies"), on a real Redis; and
every ABORTED says, in a google.rpc.RetryInfo, how long to wait."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from google.rpc import error_details_pb2

from runtime.db import Database
from runtime.errors import Aborted, LockContention, RequestInFlight
from tests.support import wait_until
from workers.execution.idempotency import RETRY_MAX_MS, RETRY_MIN_MS, Idempotency
from workers.execution.locks import FencedLocks

LEASE_MS = 300
MANY_LEASES = 5


@pytest.fixture
def guards(database: Database, redis_client: redis.Redis, redis_prefix: str) -> Iterator[Idempotency]:
    idempotency = _idempotency(database, redis_client, redis_prefix)
    yield idempotency
    idempotency.close()


def _idempotency(database: Database, client: redis.Redis, prefix: str) -> Idempotency:
    return Idempotency(database, client, prefix, lease_ms=LEASE_MS, retention=timedelta(days=1))


def _guard_key(prefix: str, owner: str, key: str) -> str:
    return f"{prefix}inflight:{{{owner}:order:{key}}}"


def _outlive_many_leases() -> None:
    # A lower bound (sleep never returns early), not a timing assertion: without renewals a guard set before this
    # is gone after one lease, so still finding it afterwards proves it was renewed.
    time.sleep(MANY_LEASES * LEASE_MS / 1000)


def _retry_info_ms(error: Aborted) -> int:
    """The RetryInfo delay exactly as the caller receives it in the status details."""
    for detail in error.details():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return int(retry.retry_delay.ToMilliseconds())
    raise AssertionError(f"{error.reason} carries no google.rpc.RetryInfo")


def test_a_live_holder_keeps_its_guard_for_many_leases(
    guards: Idempotency, redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = uuid.uuid4().hex
    guard = _guard_key(redis_prefix, "o", key)
    with guards.claim("o", "order", key, "h") as claim:
        assert claim.replay is None
        token = redis_client.get(guard)
        _outlive_many_leases()
        assert redis_client.get(guard) == token  # renewed, and still the same holder's
        assert 0 < redis_client.pttl(guard) <= LEASE_MS
        with pytest.raises(RequestInFlight) as contender, guards.claim("o", "order", key, "h"):
            pass
        assert RETRY_MIN_MS <= _retry_info_ms(contender.value) <= RETRY_MAX_MS
        assert f"retry with the same id in {contender.value.retry_after_ms} ms" in contender.value.message
    assert not redis_client.exists(guard)  # released


def test_a_dead_holders_guard_expires_within_one_lease_then_the_key_is_free(
    database: Database, redis_client: redis.Redis, redis_prefix: str, guards: Idempotency
) -> None:
    holder = _idempotency(database, redis_client, redis_prefix)
    key = uuid.uuid4().hex
    guard = _guard_key(redis_prefix, "o", key)
    claim = holder.claim("o", "order", key, "h")
    claim.__enter__()  # taken, and never released: the holder "dies" below
    holder.stop_renewing_for_test()  # what SIGKILL does to its renewer
    assert not holder.renewer_running()
    remaining_ms = redis_client.pttl(guard)
    assert 0 < remaining_ms <= LEASE_MS  # it has a TTL, and at most one lease of it
    with pytest.raises(RequestInFlight) as contender, guards.claim("o", "order", key, "h"):
        pass
    delay_ms = _retry_info_ms(contender.value)
    assert RETRY_MIN_MS <= delay_ms <= max(remaining_ms, RETRY_MIN_MS)  # the guard's remaining life, clamped
    wait_until(lambda: not redis_client.exists(guard), attempts=100, interval_s=LEASE_MS / 10_000, what="expiry")
    with guards.claim("o", "order", key, "h") as fresh:
        assert fresh.replay is None
    claim.__exit__(None, None, None)  # the "dead" holder's release finds a guard that is no longer its own


def test_the_renewer_runs_only_while_guards_are_held_and_stops_on_close(
    guards: Idempotency, redis_client: redis.Redis, redis_prefix: str
) -> None:
    assert not guards.renewer_running()
    with guards.claim("o", "order", uuid.uuid4().hex, "h"):
        assert guards.renewer_running()
    wait_until(lambda: not guards.renewer_running(), attempts=100, interval_s=LEASE_MS / 10_000, what="idle exit")
    # A later claim starts a new renewer, which renews as the first one did.
    key = uuid.uuid4().hex
    with guards.claim("o", "order", key, "h"):
        _outlive_many_leases()
        assert redis_client.exists(_guard_key(redis_prefix, "o", key))
        guards.close()
        assert not guards.renewer_running()


def test_a_holder_whose_guard_expired_does_not_stop_the_renewal_of_a_newer_claim(
    guards: Idempotency, redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = uuid.uuid4().hex
    guard = _guard_key(redis_prefix, "o", key)
    stale = guards.claim("o", "order", key, "h")
    stale.__enter__()
    redis_client.delete(guard)  # as if Redis had been unreachable for a lease: the stale holder's guard expired
    newer = guards.claim("o", "order", key, "h")  # the same key, claimed again in this process
    assert newer.__enter__().replay is None
    newer_token = redis_client.get(guard)
    stale.__exit__(None, None, None)  # the stale holder finishes first
    assert redis_client.get(guard) == newer_token  # its release did not delete the newer guard…
    _outlive_many_leases()
    assert redis_client.get(guard) == newer_token  # …nor stop its renewal
    newer.__exit__(None, None, None)
    assert not redis_client.exists(guard)


def test_lock_contention_carries_the_locks_remaining_lease(redis_client: redis.Redis, redis_prefix: str) -> None:
    locks = FencedLocks(redis_client, redis_prefix)
    held = locks.acquire("account:busy", lease_ms=LEASE_MS, wait_ms=10)
    with pytest.raises(LockContention) as contention:
        locks.acquire("account:busy", lease_ms=LEASE_MS, wait_ms=10)
    assert RETRY_MIN_MS <= _retry_info_ms(contention.value) <= LEASE_MS
    locks.release(held)
    long_held = locks.acquire("account:long", lease_ms=60_000, wait_ms=10)
    with pytest.raises(LockContention) as long_contention:
        locks.acquire("account:long", lease_ms=LEASE_MS, wait_ms=10)
    assert _retry_info_ms(long_contention.value) == RETRY_MAX_MS  # clamped: a live holder is usually quick
    locks.release(long_held)
