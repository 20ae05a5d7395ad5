"""Nonce reuse of signed callbacks (WeChat Pay's Wechatpay-Nonce) inside their ±300 s validity window.

A nonce seen again with the same body is the provider delivering the same callback again (it may, after a
timeout): it is processed as a duplicate. A nonce seen again with a different body is a replayed signature on
forged content and is refused. Redis keeps each nonce for twice the window, after which the timestamp check
refuses the callback anyway.
"""

from __future__ import annotations

import hashlib

import redis

from runtime.redis_support import register_script

WINDOW_S = 300
_REMEMBER = """
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored == ARGV[1] and 1 or 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class NotificationNonces:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._remember = register_script(client, "notification_nonce", _REMEMBER)

    def acceptable(self, channel: str, nonce: str, body: bytes) -> bool:
        """False when this nonce already signed a different body."""
        digest = hashlib.sha256(body).hexdigest()
        key = f"{self._prefix}notify-nonce:{channel}:{nonce}"
        return bool(self._remember(keys=[key], args=[digest, 2 * WINDOW_S]))
