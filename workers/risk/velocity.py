"""Velocity windows in Redis (docs/risk.md, "Velocity"): one Lua call records a payment and counts the user's.

Per user, a sorted set holds one member per payment — the owner and order id, so a repeated call with the same
order id is recorded once, however often it is assessed — scored by the time it was first seen (ms), and a hash
holds each member's currency and amount. The script trims what is older than the longest window, records this
payment (ZADD NX), and returns, for every (window, currency) the rules ask about, the number of payments and their
total amount in that currency within the window, this one included. It keeps at most MAX_ENTRIES per user (the
oldest go first), so a user hammering the API cannot grow a key without bound, and the keys expire with the
longest window.
"""

from __future__ import annotations

from datetime import datetime

import redis

from runtime.redis_support import register_script, run_scripts

MAX_ENTRIES = 1000

RECORD_AND_COUNT = """
local now, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
local function forget(members)
  for i = 1, #members, 500 do
    redis.call('HDEL', KEYS[2], unpack(members, i, math.min(i + 499, #members)))
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - keep))
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - keep))
  forget(old)
end
if redis.call('ZADD', KEYS[1], 'NX', now, ARGV[3]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
  if over > 0 then
    local dropped = redis.call('ZRANGE', KEYS[1], 0, over - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
    forget(dropped)
  end
end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now - keep, '+inf', 'WITHSCORES')
local members, scores = {}, {}
for i = 1, #entries, 2 do
  members[#members + 1] = entries[i]
  scores[#scores + 1] = tonumber(entries[i + 1])
end
local values = {}
for i = 1, #members, 500 do
  local part = redis.call('HMGET', KEYS[2], unpack(members, i, math.min(i + 499, #members)))
  for _, v in ipairs(part) do values[#values + 1] = v end
end
local out = {}
for w = 0, tonumber(ARGV[6]) - 1 do
  local since, currency = now - tonumber(ARGV[7 + 2 * w]), ARGV[8 + 2 * w]
  local count, total = 0, 0
  for i = 1, #members do
    local v = values[i]
    if scores[i] > since and v then
      local sep = string.find(v, ':', 1, true)
      if currency == '' or string.sub(v, 1, sep - 1) == currency then
        count = count + 1
        total = math.min(total + tonumber(string.sub(v, sep + 1)), 9007199254740991)
      end
    end
  end
  out[#out + 1] = count
  out[#out + 1] = total
end
return out
"""


class Velocity:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._script = register_script(client, "risk_velocity", RECORD_AND_COUNT)

    def record_and_count(
        self,
        user_id: str,
        payment_key: str,
        currency: str,
        amount_minor: int,
        now: datetime,
        windows: list[tuple[int, str]],
    ) -> dict[tuple[int, str], tuple[int, int]]:
        """One round trip: record this payment (once per `payment_key`) and count the user's within each window."""
        keep_ms = max(window_s for window_s, _ in windows) * 1000
        now_ms = int(now.timestamp() * 1000)
        args: list[str | int] = [now_ms, keep_ms, payment_key, f"{currency}:{amount_minor}", MAX_ENTRIES, len(windows)]
        for window_s, window_currency in windows:
            args += [window_s * 1000, window_currency]
        # One hash tag per user, so both keys live on one node of a Redis Cluster.
        keys = [f"{self._prefix}risk:{{{user_id}}}:seen", f"{self._prefix}risk:{{{user_id}}}:amounts"]
        (reply,) = run_scripts(self._client, [(self._script, keys, args)])
        pairs = [int(value) for value in reply]
        return {window: (pairs[2 * n], pairs[2 * n + 1]) for n, window in enumerate(windows)}
