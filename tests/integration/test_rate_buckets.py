"""The token buckets of the gateway's one Redis script (gateway/nonces.py) on a real Redis, with a clock the test
moves: the bucket math, and that a refused or replayed call spends nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.nonces import Buckets, NonceCheck, NonceStore


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now_s


def run(redis_url: str, prefix: str, steps):  # type: ignore[no-untyped-def]
    async def body() -> list[NonceCheck]:
        client = aioredis.Redis.from_url(redis_url)
        clock = Clock()
        store = NonceStore(client, f"{prefix}keys:generation", ttl_s=60, clock=clock)
        try:
            return await steps(store, clock)
        finally:
            await client.aclose()

    return asyncio.run(body())


def nonce(prefix: str) -> str:
    return f"{prefix}nonce:k:{uuid.uuid4().hex}"


def test_a_burst_then_one_token_per_interval(redis_url: str, redis_prefix: str) -> None:
    bucket = Buckets(f"{redis_prefix}rate:key:{uuid.uuid4().hex}", key_rate_per_s=2.0, key_burst=3)

    async def steps(store: NonceStore, clock: Clock) -> list[NonceCheck]:
        results = [await store.check(nonce(redis_prefix), bucket) for _ in range(4)]
        clock.now_s += 0.25  # half a token
        results.append(await store.check(nonce(redis_prefix), bucket))
        clock.now_s += 0.25  # a whole one
        results.append(await store.check(nonce(redis_prefix), bucket))
        return results

    results = run(redis_url, redis_prefix, steps)
    assert [r.fresh for r in results] == [True, True, True, False, False, True]
    assert (results[3].limited, results[3].retry_after_ms) == ("key", 500)
    assert (results[4].limited, results[4].retry_after_ms) == ("key", 250)


def test_a_refused_call_spends_neither_its_nonce_nor_a_token(redis_url: str, redis_prefix: str) -> None:
    key_bucket = f"{redis_prefix}rate:key:{uuid.uuid4().hex}"
    user = Buckets(key_bucket, 100.0, 100, f"{redis_prefix}rate:user:{uuid.uuid4().hex}", 1.0, 1)
    same = nonce(redis_prefix)

    async def steps(store: NonceStore, clock: Clock) -> list[NonceCheck]:
        first = await store.check(nonce(redis_prefix), user)
        refused = await store.check(same, user)  # the user's bucket is empty
        clock.now_s += 1.0
        retried = await store.check(same, user)  # the same nonce is still fresh: it was not recorded
        replay = await store.check(same, Buckets(key_bucket, 100.0, 100))
        return [first, refused, retried, replay]

    first, refused, retried, replay = run(redis_url, redis_prefix, steps)
    assert first.fresh and retried.fresh
    assert (refused.fresh, refused.limited, refused.retry_after_ms) == (False, "user", 1000)
    assert not replay.fresh and replay.limited is None


def test_a_lowered_burst_applies_to_saved_tokens(redis_url: str, redis_prefix: str) -> None:
    name = f"{redis_prefix}rate:key:{uuid.uuid4().hex}"

    async def steps(store: NonceStore, clock: Clock) -> list[NonceCheck]:
        await store.check(nonce(redis_prefix), Buckets(name, 1.0, 1000))  # 999 tokens saved
        return [await store.check(nonce(redis_prefix), Buckets(name, 1.0, 1)) for _ in range(2)]

    assert [r.fresh for r in run(redis_url, redis_prefix, steps)] == [True, False]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=20),
    gaps_ms=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=30),
)
def test_admitted_calls_never_exceed_burst_plus_refill(
    redis_url: str, redis_prefix: str, rate: float, burst: int, gaps_ms: list[int]
) -> None:
    bucket = Buckets(f"{redis_prefix}rate:key:{uuid.uuid4().hex}", rate, burst)

    async def steps(store: NonceStore, clock: Clock) -> list[NonceCheck]:
        results = []
        for gap in gaps_ms:
            clock.now_s += gap / 1000
            results.append(await store.check(nonce(redis_prefix), bucket))
        return results

    results = run(redis_url, redis_prefix, steps)
    admitted = sum(r.fresh for r in results)
    elapsed_s = sum(gaps_ms[1:]) / 1000
    assert admitted <= burst + rate * elapsed_s + 1e-6
    assert admitted >= min(len(gaps_ms), burst)  # a full bucket admits its burst
    for r in results:
        if not r.fresh:
            assert r.limited == "key" and 1 <= r.retry_after_ms <= 1000 / rate + 1


@pytest.mark.parametrize("rate", [0.0])
def test_no_limit_draws_no_bucket(redis_url: str, redis_prefix: str, rate: float) -> None:
    bucket = Buckets(f"{redis_prefix}rate:key:{uuid.uuid4().hex}", rate, 1)

    async def steps(store: NonceStore, clock: Clock) -> list[NonceCheck]:
        return [await store.check(nonce(redis_prefix), bucket) for _ in range(5)]

    assert all(r.fresh for r in run(redis_url, redis_prefix, steps))
