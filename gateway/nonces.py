"""The replay check and the rate limits: remember each (key, nonce) in Redis and take a token from the key's and the
user's buckets, coalescing concurrent checks into pipelines.

Every signed call costs one Redis script (the token buckets, `SET nonce NX EX ttl`, a read of the key-revocation
generation).
Sent one by one through redis-py's asyncio client that costs the gateway about 100-130 µs of CPU per call; sent as
one pipeline per batch it costs about 22 µs (docs/benchmarks.md). So checks queue up while a pipeline is in
flight and the next pipeline carries all of them: no added latency when idle (a lone check goes out at once),
larger batches exactly when the gateway is busy. At most one pipeline is in flight; batches are bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from runtime.redis_support import register_script

# One script per call: the key-revocation generation, then the token buckets (docs/security.md, "Rate limits and
# quotas"), then the nonce. A bucket is a hash {t: tokens, at: ms}; it refills at `rate` tokens per second up to
# `burst` and is read before anything is written, so a refused call spends neither a token nor its nonce (the
# caller retries it, signed anew, after the delay returned). A replayed nonce spends no token either: only a call
# that goes on to the worker pays. `at` never moves back, so gateways whose clocks differ by a little never
# refill a bucket twice for the same time. A bucket expires once it would be full again. Levels are clamped to the
# burst on every read, so a lowered limit (`paygate keys set-limits`) applies to the tokens already saved too.
# KEYS: nonce, generation, key bucket[, user bucket]. ARGV: nonce TTL s, now ms, key rate/s, key burst, user
# rate/s, user burst. Reply: {verdict, generation, retry ms}; verdict 1 fresh, 0 replay, 2 key limited, 3 user.
_ADMISSION_SCRIPT = """
local now = tonumber(ARGV[2])
local generation = redis.call('GET', KEYS[2]) or '0'
local function level(bucket, rate, burst)
  local state = redis.call('HMGET', bucket, 't', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then return burst, now end
  if now <= at then return math.min(burst, tokens), at end
  return math.min(burst, tokens + (now - at) * rate / 1000), now
end
local key_rate, key_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local user_rate, user_burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local key_tokens, key_at, user_tokens, user_at
if key_rate > 0 then
  key_tokens, key_at = level(KEYS[3], key_rate, key_burst)
  if key_tokens < 1 then return {2, generation, math.ceil((1 - key_tokens) * 1000 / key_rate)} end
end
if KEYS[4] and user_rate > 0 then
  user_tokens, user_at = level(KEYS[4], user_rate, user_burst)
  if user_tokens < 1 then return {3, generation, math.ceil((1 - user_tokens) * 1000 / user_rate)} end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {0, generation, 0} end
if key_tokens then
  redis.call('HSET', KEYS[3], 't', tostring(key_tokens - 1), 'at', tostring(key_at))
  redis.call('PEXPIRE', KEYS[3], math.ceil(key_burst * 1000 / key_rate) + 1000)
end
if user_tokens then
  redis.call('HSET', KEYS[4], 't', tostring(user_tokens - 1), 'at', tostring(user_at))
  redis.call('PEXPIRE', KEYS[4], math.ceil(user_burst * 1000 / user_rate) + 1000)
end
return {1, generation, 0}
"""

MAX_BATCH = 256


@dataclass(frozen=True)
class Buckets:
    """The token buckets one call draws from: its key's, and its user's (None: the method names no user)."""

    key: str
    key_rate_per_s: float  # 0: no limit
    key_burst: int
    user: str | None = None
    user_rate_per_s: float = 0.0
    user_burst: int = 1


NO_LIMITS = Buckets("", 0.0, 1)
LIMITED_BY = {2: "key", 3: "user"}


@dataclass(frozen=True)
class NonceCheck:
    fresh: bool  # False: this nonce was already used within the TTL (a replay), or the call was rate limited
    generation: str  # the key-revocation generation (see KeyCache)
    limited: str | None = None  # "key" or "user": a bucket was empty; nothing was recorded
    retry_after_ms: int = 0  # when `limited`: until that bucket holds a token again


_Pending = tuple[str, Buckets, "asyncio.Future[NonceCheck]"]


class NonceStore:
    def __init__(
        self,
        client: aioredis.Redis,
        generation_key: str,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._generation_key = generation_key
        self._ttl_s = ttl_s
        self._clock = clock
        self._script = register_script(client, "gateway_admission", _ADMISSION_SCRIPT)
        self._queue: deque[_Pending] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def check(self, nonce_key: str, buckets: Buckets = NO_LIMITS) -> NonceCheck:
        """Take a token from `buckets`, then record `nonce_key`: says whether it was fresh, or which bucket was
        empty (then nothing was recorded). Raises redis errors (the caller maps them)."""
        future: asyncio.Future[NonceCheck] = asyncio.get_running_loop().create_future()
        self._queue.append((nonce_key, buckets, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_batches())
        return await future

    async def generation(self) -> str:
        """The key-revocation generation alone (for a call whose signature failed: was its key just rotated?)."""
        value = await self._client.get(self._generation_key)
        return "0" if value is None else value.decode() if isinstance(value, bytes) else str(value)

    async def _send_batches(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                try:
                    results = await self._run(batch)
                except Exception as error:  # every waiter gets the failure; none is left hanging
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (*_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._sender = None

    async def _run(self, batch: list[_Pending]) -> list[NonceCheck]:
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            now_ms = int(self._clock() * 1000)
            for nonce_key, b, _ in batch:
                keys = (nonce_key, self._generation_key, b.key) if b.user is None else (
                    nonce_key, self._generation_key, b.key, b.user
                )  # fmt: skip
                limits = (b.key_rate_per_s, b.key_burst, b.user_rate_per_s, b.user_burst)
                pipe.evalsha(self._script.sha, len(keys), *keys, self._ttl_s, now_ms, *limits)
            try:
                replies = await pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                # Redis restarted and forgot the script (no nonce was written): load it and resend once.
                await self._client.script_load(_ADMISSION_SCRIPT)
                continue
            return [_to_check(reply) for reply in replies]
        raise AssertionError("unreachable")


def _to_check(reply: list[object]) -> NonceCheck:
    verdict, generation, retry_ms = int(reply[0]), reply[1], int(reply[2])  # type: ignore[call-overload]
    text = generation.decode() if isinstance(generation, bytes) else str(generation)
    return NonceCheck(verdict == 1, text, LIMITED_BY.get(verdict), retry_ms)
