"""Redis clients for PAYGATE_REDIS_URL: one server, or the primary a Sentinel names (docs/architecture.md,
"Redis high availability").

Discovery, failover and reconnection are redis-py's own (`redis.sentinel.Sentinel`,
`redis.asyncio.sentinel.Sentinel`): its pools ask the Sentinels for the primary on every new connection, drop
idle connections to an old primary, and turn a demoted primary's READONLY reply into a connection error. This
module only turns our parsed URL (runtime/redis_url.py) into their arguments.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection as AsyncConnection
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.connection import parse_url as async_parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from runtime.redis_url import RedisTarget, parse_redis_url

# Resending: redis-py resends a command that failed on a connection error or a timeout (three times, by default).
# A timed-out command may well have run, and ours are not all idempotent: a resent nonce script finds its own nonce
# and calls an honest call a replay, a resent lock script finds its own lock busy. So nothing is resent: the call
# fails closed (UNAVAILABLE, docs/errors.md) and the caller's retry with the same idempotency key is the one retry
# (docs/architecture.md, "Redis high availability"). A pool still opens a fresh connection for the next command,
# asking the Sentinels where the primary is.

# -- clients ------------------------------------------------------------------------------------------------


def _tls_kwargs(target: RedisTarget) -> dict[str, Any]:
    # Certificates are always verified (ssl_cert_reqs stays "required"): a TLS connection that trusts anyone
    # would hand the nonces and locks to whoever answers.
    return {"ssl": True, "ssl_cert_reqs": "required", **target.tls_options} if target.tls else {}


def _sentinel_kwargs(target: RedisTarget, timeouts: dict[str, Any], retry: Any) -> dict[str, Any]:
    """For the connections to the Sentinels themselves: a Sentinel that does not answer is skipped at once for
    the next one (no resend), and they need the TLS and their own password."""
    auth = {"username": target.sentinel_username, "password": target.sentinel_password}
    return {**timeouts, "retry": retry, **{k: v for k, v in auth.items() if v}, **_tls_kwargs(target)}


def _node_kwargs(target: RedisTarget, timeouts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    auth = {"username": target.username, "password": target.password}
    return {**timeouts, **extra, "db": target.db, **{k: v for k, v in auth.items() if v}, **_tls_kwargs(target)}


class SentinelRedis(redis.Redis):
    """The primary's client; closing it also closes its connections to the Sentinels."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            if isinstance(manager, Sentinel):
                manager.close()


class AsyncSentinelRedis(aioredis.Redis):
    """The asyncio twin of SentinelRedis."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            if isinstance(manager, AsyncSentinel):
                await manager.aclose()


# A single-server URL can name a primary whose address moves on failover (a managed Redis's DNS name). Its old
# primary, demoted, answers writes with READONLY while the pooled connection stays open; like redis-py's Sentinel
# connections, ours then drop that connection (the next one resolves the name again) and report a connection
# error, which the call answers with UNAVAILABLE.
_DEMOTED = "the Redis server became a replica (a failover demoted it); the connection was dropped"


class _DropsDemotedPrimary:
    """Mixed in before a redis-py connection class (sync)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ReadOnlyError:
            self.disconnect()  # type: ignore[attr-defined]
            raise redis.ConnectionError(_DEMOTED) from None


class _AsyncDropsDemotedPrimary:
    """Mixed in before a redis-py connection class (asyncio)."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ReadOnlyError:
            await self.disconnect()  # type: ignore[attr-defined]
            raise redis.ConnectionError(_DEMOTED) from None


class PrimaryConnection(_DropsDemotedPrimary, Connection):
    pass


class PrimarySSLConnection(_DropsDemotedPrimary, SSLConnection):
    pass


class AsyncPrimaryConnection(_AsyncDropsDemotedPrimary, AsyncConnection):
    pass


class AsyncPrimarySSLConnection(_AsyncDropsDemotedPrimary, AsyncSSLConnection):
    pass


def _single_server_options(target: RedisTarget, parsed: dict[str, Any], classes: tuple[type, type]) -> dict[str, Any]:
    """redis-py's reading of the URL, with our connection class for a TCP server (a Unix socket has no failover)."""
    if not target.url.lower().startswith("unix:"):
        parsed["connection_class"] = classes[1] if target.tls else classes[0]
    return parsed


def sync_client(url: str, timeouts: dict[str, Any], extra: dict[str, Any]) -> redis.Redis:
    """A redis-py client for `url`: the server's, or the Sentinel-discovered primary's."""
    target = parse_redis_url(url)
    extra = {**extra, "retry": Retry(NoBackoff(), 0)}  # see the note on resending above
    if not target.uses_sentinel:
        parsed = _single_server_options(target, parse_url(url), (PrimaryConnection, PrimarySSLConnection))
        return redis.Redis.from_pool(redis.ConnectionPool(**{**timeouts, **extra, **parsed}))
    sentinel = Sentinel(
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeouts, Retry(NoBackoff(), 0))
    )
    client: redis.Redis = sentinel.master_for(
        target.service, redis_class=SentinelRedis, **_node_kwargs(target, timeouts, extra)
    )
    return client


def async_client(url: str, timeouts: dict[str, Any], extra: dict[str, Any]) -> aioredis.Redis:
    """The asyncio twin of `sync_client`."""
    target = parse_redis_url(url)
    extra = {**extra, "retry": AsyncRetry(NoBackoff(), 0)}  # see the note on resending above
    if not target.uses_sentinel:
        classes = (AsyncPrimaryConnection, AsyncPrimarySSLConnection)
        parsed = _single_server_options(target, dict(async_parse_url(url)), classes)
        return aioredis.Redis.from_pool(aioredis.ConnectionPool(**{**timeouts, **extra, **parsed}))
    sentinel = AsyncSentinel(
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeouts, AsyncRetry(NoBackoff(), 0))
    )
    client: aioredis.Redis = sentinel.master_for(
        target.service, redis_class=AsyncSentinelRedis, **_node_kwargs(target, timeouts, extra)
    )
    return client


def describe_error(error: Exception) -> str:
    """What an operator needs from a redis error in a log line: its type and, for a connection failure, redis-py's
    message — it names the address and the cause (refused, timed out, `certificate verify failed`, no primary
    known to the Sentinels), never a password. Other errors keep only their type: a reply may quote data."""
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return f"{type(error).__name__}: {str(error)[:300]}"
    return type(error).__name__
