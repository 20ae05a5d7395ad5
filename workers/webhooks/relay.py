"""The webhook relay (docs/events.md, "Webhooks"): every worker runs its rounds, one at a time per stack.

A round takes a Redis lease, so one process delivers at a time; a process that dies loses the lease when it
expires and another worker's next round carries on. Each endpoint receives its owner's events of the types it
wants one at a time, in commit order, from its cursor: an event is delivered, then the cursor moves past it in
the database. A crash between the two delivers that event again — deliveries are at least once, receivers
deduplicate by event id — and nothing is ever skipped, since the cursor only moves after a 2xx or after the event
has been given up on and written to the dead letters. A failing event is retried on `schedule` (the delay after
each failed attempt), and then dead-lettered; the next event waits behind it, so a receiver that was down gets
everything in order once it is back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta

from runtime.db import Database
from runtime.ids import new_id
from runtime.job_metrics import WEBHOOK_RELAY
from runtime.metrics import WorkerMetrics
from workers.execution.locks import FencedLocks
from workers.store import webhooks as rows
from workers.store.webhooks import DeadLetter, Endpoint
from workers.webhooks import delivery
from workers.webhooks.endpoints import Endpoints

log = logging.getLogger(__name__)
RELAY_LEASE = "relay:webhooks"
ROUND_BUDGET_S = 5.0  # a round starts no delivery after this; the lease outlasts it by one delivery's timeouts
PARALLEL_ENDPOINTS = 8
# The delay after each failed attempt: 13 attempts over about 3 days (docs/events.md), then a dead letter.
DEFAULT_SCHEDULE_S = (30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 43200, 43200, 72000)
JITTER = 0.2


class Relay:
    def __init__(
        self,
        database: Database,
        locks: FencedLocks,
        endpoints: Endpoints,
        metrics: WorkerMetrics | None,
        *,
        schedule_s: Sequence[float] = DEFAULT_SCHEDULE_S,
        clock: Callable[[], datetime],
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        round_budget_s: float = ROUND_BUDGET_S,
    ) -> None:
        self._db = database
        self._locks = locks
        self._endpoints = endpoints
        self._metrics = metrics
        self._schedule = tuple(schedule_s)
        self._clock = clock
        self._http = delivery.http_client(connect_timeout_s, read_timeout_s)
        self._pool = ThreadPoolExecutor(PARALLEL_ENDPOINTS, thread_name_prefix="webhook")
        self._budget_s = round_budget_s
        # If this process dies mid-round, another takes over once the lease lapses: after at most this long.
        self.lease_ms = int(1000 * (round_budget_s + connect_timeout_s + read_timeout_s + 2.0))

    def round(self) -> int:
        """Deliver what is due, if no other process is relaying right now; how many events were delivered."""
        lease = self._locks.try_acquire(RELAY_LEASE, lease_ms=self.lease_ms)
        if lease is None:
            return 0
        try:
            with self._job_round():
                with self._db.read() as connection:
                    endpoints = rows.relay_endpoints(connection)
                deadline = time.monotonic() + self._budget_s
                drained = list(self._pool.map(lambda e: self._drain(e, deadline), endpoints))
                self._observe_lag([waiting for _, waiting in drained])
                return sum(delivered for delivered, _ in drained)
        finally:
            self._locks.release_quietly(lease)

    def _job_round(self) -> AbstractContextManager[None]:
        return self._metrics.jobs.round(WEBHOOK_RELAY) if self._metrics is not None else nullcontext()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def _drain(self, endpoint: Endpoint, deadline: float) -> tuple[int, datetime | None]:
        """This endpoint's due events, in order, until one fails, none is left or the round's time is up: how many
        were delivered, and when the event it stopped at (if any) was created."""
        delivered = 0
        while True:
            with self._db.read() as connection:
                event = rows.relay_next_event(connection, endpoint)
            if event is None:
                return delivered, None
            now = self._clock()
            backing_off = endpoint.next_attempt_at is not None and endpoint.next_attempt_at > now
            if backing_off or time.monotonic() >= deadline:
                return delivered, event.created_at
            secrets = self._endpoints.signing_secrets(endpoint, now)
            body = delivery.body_of(event.payload)
            attempt = delivery.deliver(self._http, endpoint.url, secrets, event.event_id, event.type, body)
            self._count(endpoint, attempt.outcome)
            moved = self._settle(endpoint, event.seq, event.event_id, attempt, now)
            if moved is None:  # failed (it is backing off now), or another relay moved it meanwhile
                return delivered, event.created_at
            endpoint = moved
            delivered += attempt.ok

    def _settle(
        self, endpoint: Endpoint, seq: int, event_id: str, attempt: delivery.Attempt, now: datetime
    ) -> Endpoint | None:
        """Move past the event (delivered, or given up on), or schedule its next attempt; the endpoint as it now
        is when the next event may go at once."""
        attempts = endpoint.attempts + 1
        with self._db.write() as connection:
            if attempt.ok:
                moved = rows.relay_advance(connection, endpoint, seq)
                return _after(endpoint, seq) if moved else None
            if attempts > len(self._schedule):
                letter = DeadLetter(new_id("wdl"), endpoint.endpoint_id, endpoint.owner, event_id, attempts,
                                    attempt.detail, now, None)  # fmt: skip
                if rows.relay_advance(connection, endpoint, seq):
                    rows.relay_dead_letter(connection, letter)
                    self._dead(endpoint, event_id, attempt)
                    return _after(endpoint, seq)
                return None
            delay = self._schedule[attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)
            rows.relay_failed(connection, endpoint, attempts, now + timedelta(seconds=delay), attempt.detail)
        return None

    def _dead(self, endpoint: Endpoint, event_id: str, attempt: delivery.Attempt) -> None:
        log.warning(
            "webhook dead-lettered",
            extra={"fields": {"endpoint": endpoint.endpoint_id, "event_id": event_id, "outcome": attempt.outcome}},
        )
        if self._metrics is not None:
            self._metrics.webhook_dead_letters.labels(endpoint.endpoint_id).inc()

    def _count(self, endpoint: Endpoint, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_deliveries.labels(endpoint.endpoint_id, outcome).inc()

    def _observe_lag(self, waiting: list[datetime | None]) -> None:
        """The age of the oldest event an endpoint has not had yet (0 when every endpoint is up to date)."""
        if self._metrics is None:
            return
        now = self._clock()
        ages = [(now - created).total_seconds() for created in waiting if created is not None]
        self._metrics.webhook_lag_seconds.set(max(ages, default=0.0))
        self._metrics.jobs.lag(WEBHOOK_RELAY, max(ages, default=0.0))


def _after(endpoint: Endpoint, seq: int) -> Endpoint:
    return replace(endpoint, cursor_seq=seq, attempts=0, next_attempt_at=None, last_error="")
