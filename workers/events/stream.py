"""StreamEvents on a worker (docs/events.md, "Streaming"): the owner's events after a cursor, then live.

A stream is a loop: read the next page of the owner's events after the last one sent (on the thread pool, like
every database read), send them, and when there are none, wait for the feed to say something committed
(workers/events/feed.py) — sending a heartbeat when one is due. Numbers come in commit order without gaps
(runtime/outbox.py), so "after the last one sent" can neither skip an event nor send one twice, across
reconnections too: the cursor is the id of the last event the caller handled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.db import Database
from runtime.errors import NotFound, ResourceExhausted, Unavailable
from runtime.metrics import WorkerMetrics
from workers.domain.subscriptions import EventSubscription
from workers.domain.types import Caller
from workers.events.feed import EventFeed
from workers.store import events as event_rows

PAGE = 200  # events per read; a stream that is behind reads page after page without waiting
_CLOSING = "this worker is shutting down; call StreamEvents again with the last event_id you received"
T = TypeVar("T")


class EventStreams:
    """The streams one worker serves, at most `max_streams` at a time."""

    def __init__(
        self,
        database: Database,
        feed: EventFeed,
        executor: ThreadPoolExecutor,
        metrics: WorkerMetrics | None,
        *,
        heartbeat_s: float,
        max_streams: int,
    ) -> None:
        self._database = database
        self._feed = feed
        self._executor = executor
        self._metrics = metrics
        self._heartbeat_s = heartbeat_s
        self._max_streams = max_streams
        self._active = 0
        self._closing = False

    def close(self) -> None:
        """The worker is stopping: every stream ends now with UNAVAILABLE (its caller resumes elsewhere)."""
        self._closing = True
        self._feed.wake_all()

    async def stream(self, caller: Caller, subscription: EventSubscription) -> AsyncIterator[pb.StreamEventsResponse]:
        if self._closing:
            raise Unavailable(_CLOSING)
        if self._active >= self._max_streams:
            raise ResourceExhausted(
                f"this worker serves its maximum of {self._max_streams} event streams; retry after the delay",
                reason="TOO_MANY_STREAMS",
                retry_after_ms=1000,
            )
        self._active += 1
        if self._metrics is not None:
            self._metrics.event_streams.inc()
        try:
            after = await self._off_loop(self._start, caller.owner, subscription.after_cursor)
            async for message in self._follow(caller.owner, after, subscription.types):
                yield message
        finally:
            self._active -= 1
            if self._metrics is not None:
                self._metrics.event_streams.dec()

    async def _follow(self, owner: str, after: int, types: frozenset[str]) -> AsyncIterator[pb.StreamEventsResponse]:
        heartbeat_due = time.monotonic() + self._heartbeat_s
        while True:
            if self._closing:
                raise Unavailable(_CLOSING)
            changed = self._feed.mark()  # before the read: a commit during it still wakes the wait below
            page = await self._off_loop(self._page, owner, after, types)
            for row in page:
                yield pb.StreamEventsResponse(event=pb.Event.FromString(row.payload))
                after = row.seq
            self._count("event", len(page))
            if len(page) == PAGE:
                continue  # behind: the next page at once
            now = time.monotonic()
            if page:
                heartbeat_due = now + self._heartbeat_s
            elif now >= heartbeat_due:
                stamp = Timestamp()
                stamp.GetCurrentTime()
                yield pb.StreamEventsResponse(heartbeat=pb.Heartbeat(time=stamp))
                self._count("heartbeat", 1)
                heartbeat_due = now + self._heartbeat_s
            await self._feed.wait(changed, heartbeat_due - now)

    def _start(self, owner: str, cursor: str) -> int:
        """The number after which the stream starts: its cursor's, or 0 (the oldest event kept)."""
        if not cursor:
            return 0
        with self._database.read() as connection:
            seq = event_rows.seq_of(connection, owner, cursor)
        if seq is None:
            raise NotFound(
                "after_cursor names no event of yours: pass the event_id of an event a stream sent you, or no "
                "cursor to start from the oldest event kept"
            )
        return seq

    def _page(self, owner: str, after: int, types: frozenset[str]) -> list[event_rows.StoredEvent]:
        with self._database.read() as connection:
            return event_rows.after(connection, owner, after, types=types, limit=PAGE)

    async def _off_loop(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def _count(self, kind: str, amount: int) -> None:
        if self._metrics is not None and amount:
            self._metrics.events_streamed.labels(kind).inc(amount)
