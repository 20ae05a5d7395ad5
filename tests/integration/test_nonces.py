"""The coalescing nonce store on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway.nonces import NonceStore


async def _with_store(redis_url: str, prefix: str, body):  # type: ignore[no-untyped-def]
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await body(client, NonceStore(client, f"{prefix}keys:generation", ttl_s=60))
    finally:
        await client.aclose()


def test_concurrent_distinct_nonces_are_all_fresh_and_replays_are_not(redis_url: str, redis_prefix: str) -> None:
    async def body(client, store):  # type: ignore[no-untyped-def]
        keys = [f"{redis_prefix}nonce:k:{i:04d}" for i in range(300)]
        first = await asyncio.gather(*(store.check(k) for k in keys))
        again = await asyncio.gather(*(store.check(k) for k in keys[:50]))
        ttl = await client.ttl(keys[0])
        return first, again, ttl

    first, again, ttl = asyncio.run(_with_store(redis_url, redis_prefix, body))
    assert all(check.fresh for check in first)
    assert not any(check.fresh for check in again)
    assert 0 < ttl <= 60


def test_the_same_nonce_racing_itself_is_fresh_exactly_once(redis_url: str, redis_prefix: str) -> None:
    async def body(client, store):  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(store.check(f"{redis_prefix}nonce:k:same") for _ in range(40)))

    results = asyncio.run(_with_store(redis_url, redis_prefix, body))
    assert sum(check.fresh for check in results) == 1


def test_the_generation_is_reported(redis_url: str, redis_prefix: str) -> None:
    async def body(client, store):  # type: ignore[no-untyped-def]
        before = await store.check(f"{redis_prefix}nonce:k:g1")
        await client.incr(f"{redis_prefix}keys:generation")
        after = await store.check(f"{redis_prefix}nonce:k:g2")
        return before, after

    before, after = asyncio.run(_with_store(redis_url, redis_prefix, body))
    assert before.generation == "0"
    assert after.generation == "1"


def test_a_redis_that_forgot_the_script_is_handled(redis_url: str, redis_prefix: str) -> None:
    async def body(client, store):  # type: ignore[no-untyped-def]
        await store.check(f"{redis_prefix}nonce:k:s1")
        await client.script_flush()
        return await store.check(f"{redis_prefix}nonce:k:s2")

    assert asyncio.run(_with_store(redis_url, redis_prefix, body)).fresh


def test_an_unreachable_redis_fails_every_waiter() -> None:
    async def body() -> list[object]:
        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        store = NonceStore(client, "x:keys:generation", ttl_s=60)
        try:
            return await asyncio.gather(*(store.check(f"x:n:{i}") for i in range(5)), return_exceptions=True)
        finally:
            await client.aclose()

    results = asyncio.run(body())
    assert len(results) == 5
    assert all(isinstance(result, aioredis.ConnectionError) for result in results)


@pytest.mark.parametrize("batch", [1, 7])
def test_sequential_checks_each_go_out(redis_url: str, redis_prefix: str, batch: int) -> None:
    async def body(client, store):  # type: ignore[no-untyped-def]
        results = []
        for i in range(batch):
            results.append(await store.check(f"{redis_prefix}nonce:seq:{i}"))
        return results

    assert all(check.fresh for check in asyncio.run(_with_store(redis_url, redis_prefix, body)))
