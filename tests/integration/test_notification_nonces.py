"""WeChat Pay callback nonces on a real Redis: a nonce may sign one body only (workers/channels/nonces.py)."""

from __future__ import annotations

import uuid

import redis

from workers.channels.nonces import WINDOW_S, NotificationNonces


def test_a_nonce_signs_one_body_and_its_redelivery_is_accepted(redis_client: redis.Redis, redis_prefix: str) -> None:
    nonces = NotificationNonces(redis_client, redis_prefix)
    nonce = uuid.uuid4().hex
    assert nonces.acceptable("wechat_pay", nonce, b'{"id": "EV-1"}')
    assert nonces.acceptable("wechat_pay", nonce, b'{"id": "EV-1"}')  # the provider delivering the same again
    assert not nonces.acceptable("wechat_pay", nonce, b'{"id": "EV-2"}')  # a replayed signature, other content
    assert nonces.acceptable("card", nonce, b'{"id": "EV-2"}')  # nonces are per channel
    ttl = redis_client.ttl(f"{redis_prefix}notify-nonce:wechat_pay:{nonce}")
    assert 0 < ttl <= 2 * WINDOW_S  # remembered for the whole validity window, and no longer
