"""Background jobs' runs, duration, lag and last success (docs/metrics.md, "Background jobs").

Every worker runs each job, a round at a time under a Redis lease; only a round that took the lease counts, so
`paygate_background_runs_total` summed over workers is the number of rounds the stack really did. The lag is set
by the worker that ran the latest round (`livemostrecent`: the newest value of a live process wins); the last
success is the newest of any process, dead ones included (`max`): a round that succeeded did succeed, whichever
process ran it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Rounds last milliseconds (nothing due) to the round budgets of the jobs (8 s) and a little beyond.
RUN_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EXPIRY_SWEEPER = "expiry_sweeper"
JANITOR = "janitor"
WEBHOOK_RELAY = "webhook_relay"
JOBS = (EXPIRY_SWEEPER, JANITOR, WEBHOOK_RELAY)


class BackgroundJobMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.runs = Counter(
            "paygate_background_runs",
            "Rounds of a background job that held its lease, by outcome (ok, error).",
            ("background_job", "outcome"),
            registry=registry,
        )
        self.run_seconds = Histogram(
            "paygate_background_run_seconds",
            "Duration of a background job's round (seconds).",
            ("background_job",),
            buckets=RUN_BUCKETS_S,
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "paygate_background_lag_seconds",
            "Age of the oldest item the job has not handled yet, as its latest round saw it (0: nothing waits).",
            ("background_job",),
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.last_success = Gauge(
            "paygate_background_last_success_timestamp_seconds",
            "When a round of the job last ended without an error (seconds since the epoch).",
            ("background_job",),
            registry=registry,
            multiprocess_mode="max",
        )

    @contextmanager
    def round(self, job: str) -> Iterator[None]:
        """Time one round that holds the job's lease: ok when it returns, error when it raises (re-raised)."""
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.runs.labels(job, "error").inc()
            raise
        else:
            self.runs.labels(job, "ok").inc()
            self.last_success.labels(job).set(time.time())
        finally:
            self.run_seconds.labels(job).observe(time.perf_counter() - started)

    def lag(self, job: str, seconds: float) -> None:
        self.lag_seconds.labels(job).set(max(0.0, seconds))

    def declare(self) -> None:
        """Create each job's series at zero, so dashboards and alerts see them before the first round."""
        for job in JOBS:
            for outcome in ("ok", "error"):
                self.runs.labels(job, outcome)
