"""Wake-ups for event streams (docs/events.md, "Streaming"): "events up to number N have committed".

A stream reads the owner's events after its cursor, sends them, and then waits here instead of polling the
database in a loop. Commits in this process wake it at once (`committed`, called by `Database.write()` after each
commit that wrote events); commits in the other workers arrive over Redis pub/sub, where this process also
announces its own. The announcements are coalesced by one publisher thread, so a commit only sets a number and
never waits for Redis, and a burst of commits costs one message. A lost message (Redis restarting) delays a
stream by at most `poll_s`: every wait ends by then, and the stream looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)
RESUBSCRIBE_AFTER_S = 1.0


class EventFeed:
    def __init__(self, client: redis.Redis, async_client: aioredis.Redis, prefix: str, *, poll_s: float) -> None:
        self.channel = f"{prefix}events:committed"
        self.poll_s = poll_s
        self._client = client
        self._async_client = async_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._latest = 0  # the highest number announced to this process (ours or another's)
        self._to_publish = 0
        self._pending = threading.Condition()
        self._stopped = False
        self._publisher = threading.Thread(target=self._publish_loop, name="event-feed-publisher", daemon=True)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._publisher.start()

    def committed(self, last_seq: int) -> None:
        """From any thread, right after a commit that wrote events numbered up to `last_seq`."""
        with self._pending:
            self._to_publish = max(self._to_publish, last_seq)
            self._pending.notify()
        loop = self._loop
        if loop is not None:
            # RuntimeError: the loop has closed (the worker is stopping), so no stream is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._heard, last_seq)

    def mark(self) -> asyncio.Event:
        """Taken before a stream reads: `wait(mark)` then also returns for a commit heard during the read."""
        return self._changed

    async def wait(self, changed: asyncio.Event, timeout_s: float) -> None:
        """Until something committed since `changed` was marked, or `timeout_s` at most (never past `poll_s`)."""
        try:
            async with asyncio.timeout(min(timeout_s, self.poll_s)):
                await changed.wait()
        except TimeoutError:
            pass

    async def listen(self, stopping: asyncio.Event) -> None:
        """Hear the other processes' commits until stopping; a broken subscription is made again."""
        while not stopping.is_set():
            pubsub = self._async_client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while not stopping.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
                    if message is not None:
                        self._heard(int(message["data"]))
            except (redis.RedisError, OSError, ValueError) as error:
                log.warning("event feed subscription lost", extra={"fields": {"error": type(error).__name__}})
                await asyncio.sleep(RESUBSCRIBE_AFTER_S)
            finally:
                await pubsub.aclose()

    def wake_all(self) -> None:
        """On the loop: wake every waiting stream now (the worker is stopping)."""
        self._heard(self._latest)

    def close(self) -> None:
        with self._pending:
            self._stopped = True
            self._pending.notify()
        if self._publisher.is_alive():
            self._publisher.join(timeout=5)

    def _heard(self, last_seq: int) -> None:
        """On the loop: wake every waiting stream (each reads from its own cursor, so one wake-up serves all)."""
        self._latest = max(self._latest, last_seq)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _publish_loop(self) -> None:
        published = 0
        while True:
            with self._pending:
                while self._to_publish <= published and not self._stopped:
                    self._pending.wait()
                if self._stopped:
                    return
                latest = self._to_publish
            try:
                self._client.publish(self.channel, latest)
                published = latest
            except redis.RedisError as error:  # the other workers' streams find it by polling meanwhile
                log.warning("event feed publish failed", extra={"fields": {"error": type(error).__name__}})
                with self._pending:
                    self._pending.wait(timeout=RESUBSCRIBE_AFTER_S)
