"""Prometheus metrics of the gateway and the workers (docs/architecture.md, "Observability").

Nothing is registered at import time. Under `paygate serve` every process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR and the supervisor's one /metrics endpoint aggregates them; a process run on its own
(e.g. one Kubernetes pod) serves its own registry instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from runtime.errors import ConfigurationError
from runtime.job_metrics import BackgroundJobMetrics
from runtime.settings import parse_host_port

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOCK_WAIT_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
# Provider calls and payer time span milliseconds (a loopback simulator) to minutes (a payer scanning a QR code).
CHANNEL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def process_registry() -> CollectorRegistry | None:
    """Where this process registers its metrics: nowhere in multiprocess mode (files), else its own registry."""
    return None if multiprocess_enabled() else CollectorRegistry()


def serve_metrics(listen: str, registry: CollectorRegistry | None, multiprocess_dir: str | None = None) -> None:
    """Serve /metrics on `listen`: `registry`, or else the aggregate of every process's files in the directory."""
    host, port = parse_host_port(listen, "metrics address")
    if registry is None:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    try:
        start_http_server(port, addr=host.strip("[]"), registry=registry)
    except OSError as error:
        raise ConfigurationError(f"cannot serve metrics on {listen}: {error.strerror}") from None


@dataclass
class GatewayMetrics:
    started: Counter
    handled: Counter
    handling_seconds: Histogram
    auth_failures: Counter
    forwarded: Counter
    worker_healthy: Gauge
    admission_refusals: Counter
    secret_used: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> GatewayMetrics:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        return cls(
            started=Counter("grpc_server_started_total", "RPCs started on the gateway.", labels, registry=registry),
            handled=Counter(
                "grpc_server_handled_total",
                "RPCs completed on the gateway, by status code.",
                (*labels, "grpc_code"),
                registry=registry,
            ),
            handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Gateway RPC latency, from receipt to response (seconds).",
                labels,
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            auth_failures=Counter(
                "paygate_auth_failures_total",
                "Calls the gateway rejected before forwarding, by rule.",
                ("reason",),
                registry=registry,
            ),
            forwarded=Counter(
                "paygate_gateway_forwarded_total",
                "Calls forwarded to workers, by worker address and outcome.",
                ("worker_address", "outcome"),
                registry=registry,
            ),
            worker_healthy=Gauge(
                "paygate_worker_healthy",
                "1 when the gateway has the worker in its rotation.",
                ("worker_address",),
                registry=registry,
                # live: the files of a gateway that died go with it (the supervisor marks it dead), so a restarted
                # gateway's 0 is not hidden behind its predecessor's 1 (docs/metrics.md, "After a restart").
                multiprocess_mode="livemax",
            ),
            admission_refusals=Counter(
                "paygate_gateway_admission_refusals_total",
                "Calls the gateway ended for its admission bounds: read_timeout, evicted_connection, "
                "evicted_total (pending calls without a complete request), in_flight (authenticated calls), "
                "rate_limited_key, rate_limited_user, too_many_concurrent_calls (a key's limits).",
                ("reason",),
                registry=registry,
            ),
            secret_used=Counter(
                "paygate_auth_secret_used_total",
                "Verified calls by key and by the secret that signed them: current, or previous during a rotation.",
                ("key_id", "secret"),
                registry=registry,
            ),
        )


@dataclass
class WorkerMetrics:
    requests: Counter
    handling_seconds: Histogram
    lock_wait_seconds: Histogram
    payments: Counter
    money_moved_minor: Counter
    ledger_retries: Counter
    channel_notifications: Counter
    channel_call_seconds: Histogram
    payment_stage_seconds: Histogram
    channel_refusals: Counter
    batch_size: Histogram
    batch_outcomes: Counter
    batch_phase_seconds: Histogram
    event_streams: Gauge
    events_streamed: Counter
    webhook_deliveries: Counter
    webhook_dead_letters: Counter
    webhook_lag_seconds: Gauge
    risk_decisions: Counter
    risk_rule_hits: Counter
    risk_score: Histogram
    risk_rule_reloads: Counter
    jobs: BackgroundJobMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> WorkerMetrics:
        return cls(
            requests=Counter(
                "paygate_worker_requests_total",
                "Requests served by each worker, by method and status code.",
                ("worker", "grpc_method", "grpc_code"),
                registry=registry,
            ),
            handling_seconds=Histogram(
                "paygate_worker_handling_seconds",
                "Worker time per request (seconds).",
                ("worker", "grpc_method"),
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            lock_wait_seconds=Histogram(
                "paygate_lock_wait_seconds",
                "Time spent waiting for a Redis account lock (seconds), by outcome.",
                ("outcome",),
                buckets=LOCK_WAIT_BUCKETS_S,
                registry=registry,
            ),
            payments=Counter(
                "paygate_payments_total",
                "Payments created, by type, method and final status.",
                ("payment_type", "method", "status"),
                registry=registry,
            ),
            money_moved_minor=Counter(
                "paygate_money_moved_minor_total",
                "Minor units moved by successful payments, by type and currency.",
                ("payment_type", "currency"),
                registry=registry,
            ),
            ledger_retries=Counter(
                "paygate_ledger_retries_total",
                "Ledger transactions rolled back and retried, by reason (stale_fence, deadlock).",
                ("reason",),
                registry=registry,
            ),
            channel_notifications=Counter(
                "paygate_channel_notifications_total",
                "Provider callbacks handled, by channel, verdict (applied, duplicate, rejected) and reason.",
                ("channel", "verdict", "reason"),
                registry=registry,
            ),
            channel_call_seconds=Histogram(
                "paygate_channel_call_seconds",
                "Calls to a provider over the network (seconds), by channel, purpose and outcome.",
                ("channel", "purpose", "outcome"),
                buckets=CHANNEL_BUCKETS_S,
                registry=registry,
            ),
            payment_stage_seconds=Histogram(
                "paygate_payment_stage_seconds",
                "Payment time by stage (seconds): processing (ours, without the provider call), provider_call "
                "(the network), bank (the provider's confirmation delay after our call), notification (handling).",
                ("channel", "stage"),
                buckets=CHANNEL_BUCKETS_S,
                registry=registry,
            ),
            channel_refusals=Counter(
                "paygate_channel_refusals_total",
                "Calls to a channel refused before anything was sent, by reason (circuit_open, busy).",
                ("channel", "reason"),
                registry=registry,
            ),
            **_group_commit_metrics(registry),
            **_event_metrics(registry),
        )


def _event_metrics(registry: CollectorRegistry | None) -> dict[str, Any]:
    return dict(
        jobs=BackgroundJobMetrics(registry),  # docs/metrics.md, "Background jobs"
        event_streams=Gauge(
            "paygate_event_streams",
            "StreamEvents subscribers being served now (workers of this stack together).",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        events_streamed=Counter(
            "paygate_events_streamed_total",
            "Messages sent on event streams, by kind (event, heartbeat).",
            ("kind",),
            registry=registry,
        ),
        webhook_deliveries=Counter(
            "paygate_webhook_deliveries_total",
            "Webhook delivery attempts, by endpoint and outcome (delivered, http_<status>, timeout, connect_error).",
            ("endpoint", "outcome"),
            registry=registry,
        ),
        webhook_dead_letters=Counter(
            "paygate_webhook_dead_letters_total",
            "Events given up on after the whole retry schedule, by endpoint.",
            ("endpoint",),
            registry=registry,
        ),
        webhook_lag_seconds=Gauge(
            "paygate_webhook_lag_seconds",
            "Age of the oldest event some webhook endpoint has not had yet (0: every endpoint is up to date).",
            registry=registry,
            # Set by whichever worker ran the latest relay round: the newest value wins, not the largest one.
            multiprocess_mode="livemostrecent",
        ),
        # The risk engine (docs/risk.md); rule names are the operator's, bounded by the rules file (200 at most).
        risk_decisions=Counter(
            "paygate_risk_decisions_total",
            "Risk decisions on payments, by decision (allow, review, deny) and method.",
            ("decision", "method"),
            registry=registry,
        ),
        risk_rule_hits=Counter(
            "paygate_risk_rule_hits_total", "Risk rules that fired, by rule name.", ("rule",), registry=registry
        ),
        risk_score=Histogram(
            "paygate_risk_score",
            "Combined risk of assessed payments, 1 - prod(1 - p) over the rules that fired.",
            buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0),
            registry=registry,
        ),
        risk_rule_reloads=Counter(
            "paygate_risk_rule_reloads_total",
            "Changes of the risk rules file a worker noticed, by outcome (applied, refused).",
            ("outcome",),
            registry=registry,
        ),
    )


def _group_commit_metrics(registry: CollectorRegistry | None) -> dict[str, Any]:
    return dict(
        batch_size=Histogram(
            "paygate_group_commit_batch_size",
            "Operations committed together in one group-commit transaction, by kind.",
            ("kind",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        ),
        batch_outcomes=Counter(
            "paygate_group_commit_operations_total",
            "Operations handed to the group committer, by kind and outcome (committed, refused: their own "
            "error, replayed: an earlier answer, single_*: passed to the one-at-a-time path, with the reason).",
            ("kind", "outcome"),
            registry=registry,
        ),
        batch_phase_seconds=Histogram(
            "paygate_group_commit_phase_seconds",
            "Time of each phase of a group commit (seconds): redis (guards and locks, one round trip), transaction "
            "(all of begin, statements and commit), begin (the SQLite writer gate and BEGIN), statements (reads and "
            "writes), commit (the durable commit), release (one round trip).",
            ("kind", "phase"),
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
    )
