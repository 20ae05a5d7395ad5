"""Our Redis clients across a Sentinel failover (docs/architecture.md, "Redis high availability"): SENTINEL
FAILOVER demotes the old primary while it still runs, so the pooled connections first meet its READONLY reply, then
a new primary that has never seen our Lua scripts (Redis does not replicate its script cache). Both clients must
fail closed (a redis ConnectionError, which the boundaries turn into UNAVAILABLE), rediscover the primary by
themselves, reload the scripts on NOSCRIPT and run each call once. A single-server URL (a managed Redis behind one
name) drops its connection to a demoted primary the same way."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.nonces import NonceStore
from runtime.redis_support import connect, connect_async, run_scripts
from stack.dev_certs import ensure_dev_certs
from tests.redis_servers import Processes, SentinelGroup, answers, redis_binaries
from tests.support import free_port, wait_until

INCREMENT = "return redis.call('INCR', KEYS[1])"
ATTEMPTS = 200  # each attempt is one call; between them the Sentinels finish reconfiguring


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    servers = SentinelGroup(tmp_path / "redis")
    servers.directory.mkdir()
    try:
        servers.start_all()
        yield servers
    finally:
        servers.close()


def first_success(call: Callable[[], Any], refusals: list[str]) -> Any:
    """Call until it succeeds; every failure on the way must be a connection error (fail closed)."""
    result: list[Any] = []

    def attempt() -> bool:
        try:
            result.append(call())
        except redis.ConnectionError as error:
            refusals.append(type(error).__name__)
            return False
        return True

    wait_until(attempt, attempts=ATTEMPTS, interval_s=0.05, what="a call on the new primary")
    return result[0]


async def async_first_success(call: Callable[[], Awaitable[Any]], refusals: list[str]) -> Any:
    for _ in range(ATTEMPTS):
        try:
            return await call()
        except redis.ConnectionError as error:
            refusals.append(type(error).__name__)
            await asyncio.sleep(0.05)
    raise AssertionError("no call succeeded on the new primary")


def test_both_clients_follow_a_failover_and_reload_their_scripts(group: SentinelGroup) -> None:
    asyncio.run(_across_a_failover(group))


def test_the_same_over_tls_to_the_sentinels_and_the_servers(tmp_path: Path) -> None:
    """`rediss+sentinel://`: Sentinels, servers and replication all TLS-only with client certificates."""
    certs, _ = ensure_dev_certs(tmp_path / "certs")
    servers = SentinelGroup(tmp_path / "redis", certs=certs.directory)
    servers.directory.mkdir()
    try:
        servers.start_all()
        assert servers.url.startswith("rediss+sentinel://")
        asyncio.run(_across_a_failover(servers))
    finally:
        servers.close()


async def _across_a_failover(group: SentinelGroup) -> None:
    prefix = f"ha-{uuid.uuid4().hex[:8]}:"
    client, async_client = connect(group.url), connect_async(group.url)
    try:
        script = client.register_script(INCREMENT)
        nonces = NonceStore(async_client, f"{prefix}generation", ttl_s=600)
        assert run_scripts(client, [(script, [f"{prefix}count"], [])]) == [1]
        assert (await nonces.check(f"{prefix}nonce-before")).fresh
        assert client.wait(1, 5000) == 1  # both writes are on the replica before it is promoted

        new_port = group.failover()
        with group.admin(new_port) as new_primary:
            assert new_primary.script_exists(script.sha, nonces._script.sha) == [False, False]

            refusals: list[str] = []
            assert first_success(lambda: run_scripts(client, [(script, [f"{prefix}count"], [])]), refusals) == [2]
            assert new_primary.get(f"{prefix}count") == b"2"  # it ran once: no refused attempt ran it
            assert (await async_first_success(lambda: nonces.check(f"{prefix}nonce-after"), refusals)).fresh
            # A nonce recorded before the switch and replicated is still a replay after it.
            assert not (await nonces.check(f"{prefix}nonce-before")).fresh
            assert new_primary.script_exists(script.sha, nonces._script.sha) == [True, True]
        print(f"refusals on the way: {refusals}")
    finally:
        client.close()
        await async_client.aclose()


def test_a_single_server_url_drops_the_connection_to_a_demoted_primary(tmp_path: Path) -> None:
    """A managed Redis behind one name: its primary is demoted while our pooled connection stays open. The write
    fails as a connection error (UNAVAILABLE), not as READONLY on every later call, and the next call connects
    afresh (here: to the same server, promoted back)."""
    asyncio.run(_demoted_single_server(tmp_path))


async def _demoted_single_server(tmp_path: Path) -> None:
    servers = Processes(tmp_path)
    server, _ = redis_binaries()
    ports = [free_port(), free_port()]
    for n, port in enumerate(ports):
        servers.start(
            f"server-{n}", [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(tmp_path)]
        )
    client, async_client = connect(f"redis://127.0.0.1:{ports[0]}/0"), connect_async(f"redis://127.0.0.1:{ports[0]}/0")
    try:
        wait_until(lambda: answers(ports[0]) and answers(ports[1]), attempts=400, what="two redis-servers")
        client.set("ha:demoted", "1")
        await async_client.set("ha:demoted", "1")
        with redis.Redis(host="127.0.0.1", port=ports[0]) as admin:
            admin.replicaof("127.0.0.1", str(ports[1]))
            with pytest.raises(redis.ConnectionError, match="became a replica"):
                client.set("ha:demoted", "2")
            with pytest.raises(redis.ConnectionError, match="became a replica"):
                await async_client.set("ha:demoted", "2")
            admin.replicaof("NO", "ONE")
        assert client.set("ha:demoted", "3") and await async_client.set("ha:demoted", "4")
    finally:
        client.close()
        await async_client.aclose()
        servers.close()
