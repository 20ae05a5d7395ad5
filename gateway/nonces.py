"""The replay check: remember each (key, nonce) in Redis, coalescing concurrent checks into pipelines.

Every signed call costs one Redis script (`SET nonce NX EX ttl` plus a read of the key-revocation generation).
Sent one by one through redis-py's asyncio client that costs the gateway about 100-130 µs of CPU per call; sent as
one pipeline per batch it costs about 22 µs (docs/benchmarks.md). So checks queue up while a pipeline is in
flight and the next pipeline carries all of them: no added latency when idle (a lone check goes out at once),
larger batches exactly when the gateway is busy. At most one pipeline is in flight; batches are bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

_NONCE_AND_GENERATION = """
local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
local generation = redis.call('GET', KEYS[2])
if fresh then
  return {1, generation or '0'}
end
return {0, generation or '0'}
"""

MAX_BATCH = 256


@dataclass(frozen=True)
class NonceCheck:
    fresh: bool  # False: this nonce was already used within the TTL (a replay)
    generation: str  # the key-revocation generation (see KeyCache)


class NonceStore:
    def __init__(self, client: aioredis.Redis, generation_key: str, ttl_s: int) -> None:
        self._client = client
        self._generation_key = generation_key
        self._ttl_s = ttl_s
        self._script = client.register_script(_NONCE_AND_GENERATION)
        self._queue: deque[tuple[str, asyncio.Future[NonceCheck]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def check(self, nonce_key: str) -> NonceCheck:
        """Record `nonce_key`; says whether it was fresh. Raises redis errors (the caller maps them)."""
        future: asyncio.Future[NonceCheck] = asyncio.get_running_loop().create_future()
        self._queue.append((nonce_key, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_batches())
        return await future

    async def _send_batches(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                try:
                    results = await self._run(batch)
                except Exception as error:  # every waiter gets the failure; none is left hanging
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._sender = None

    async def _run(self, batch: list[tuple[str, asyncio.Future[NonceCheck]]]) -> list[NonceCheck]:
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for nonce_key, _ in batch:
                pipe.evalsha(self._script.sha, 2, nonce_key, self._generation_key, self._ttl_s)
            try:
                replies = await pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                # Redis restarted and forgot the script (no nonce was written): load it and resend once.
                await self._client.script_load(_NONCE_AND_GENERATION)
                continue
            return [
                NonceCheck(bool(int(fresh)), generation.decode() if isinstance(generation, bytes) else str(generation))
                for fresh, generation in replies
            ]
        raise AssertionError("unreachable")
