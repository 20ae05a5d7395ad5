"""Build a worker's operations from settings; shared by the worker process, the CLI and the integration tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial

import redis

from runtime import audit
from runtime.db import Database
from runtime.errors import ConfigurationError
from runtime.master_key import derive_key, load_master_key
from runtime.metrics import WorkerMetrics
from runtime.redis_support import connect
from runtime.settings import Settings
from workers.channels.adapter import ProviderChannel
from workers.channels.config import load_channels
from workers.channels.http import ChannelLimits
from workers.channels.nonces import NotificationNonces
from workers.channels.registry import Channels
from workers.channels.sandbox import SandboxChannel
from workers.codec.page_tokens import PAGE_TOKEN_KEY_PURPOSE, PageTokens
from workers.execution.group_commit import GroupCommitter
from workers.execution.idempotency import Idempotency
from workers.execution.keyed import Executor
from workers.execution.locks import FencedLocks
from workers.operations.context import Context, utc_now
from workers.operations.purchase_batch import commit_purchases
from workers.risk.audit import reload_recorder
from workers.risk.engine import PHONE_KEY_PURPOSE, RiskEngine
from workers.risk.rules_file import RulesError
from workers.risk.velocity import Velocity
from workers.service import PaymentService
from workers.vault.cards import CardVault
from workers.webhooks.endpoints import Endpoints
from workers.webhooks.relay import DEFAULT_SCHEDULE_S, Relay


def build_service(
    settings: Settings,
    database: Database,
    metrics: WorkerMetrics | None,
    clock: Callable[[], datetime] = utc_now,
    *,
    group_commit: bool = True,
) -> PaymentService:
    audit.enable(database, audit.chain_key(settings))  # refunds append to the trail (docs/audit.md)
    client = connect(settings.effective_redis_url())
    locks = FencedLocks(
        client,
        settings.redis_prefix,
        observe_wait=(lambda outcome, s: metrics.lock_wait_seconds.labels(outcome).observe(s)) if metrics else None,
    )
    idempotency = Idempotency(
        database,
        client,
        settings.redis_prefix,
        lease_ms=settings.lock_lease_ms,  # a dead holder's guard is gone within one lock lease
        retention=timedelta(seconds=settings.idempotency_retention_s),
    )
    executor = Executor(
        idempotency,
        locks,
        lock_lease_ms=settings.lock_lease_ms,
        lock_wait_ms=settings.lock_wait_ms,
        metrics=metrics,
    )
    context = Context(
        db=database,
        executor=executor,
        channels=Channels(
            [
                SandboxChannel(deferred=settings.sandbox_confirmation == "deferred"),
                *_providers(settings, metrics, clock),
            ]
        ),
        page_tokens=PageTokens(derive_key(settings, PAGE_TOKEN_KEY_PURPOSE)),
        vault=CardVault(database, load_master_key(settings, create=True), clock),
        platform_fee_bps=settings.platform_fee_bps,
        metrics=metrics,
        clock=clock,
        notification_nonces=NotificationNonces(client, settings.redis_prefix),
        first_check=timedelta(seconds=settings.janitor_first_check_s),
        risk=risk_engine(settings, client, metrics, database),
    )
    if group_commit:
        # The committer's own context has none, so a batch never submits to itself.
        committer = GroupCommitter(
            "purchases",
            partial(commit_purchases, context),
            max_batch=settings.group_commit_max_batch,
            max_wait_ms=settings.group_commit_max_wait_ms,
        )
        context = replace(context, purchases=committer)
    return PaymentService(context)


def risk_engine(
    settings: Settings, client: redis.Redis, metrics: WorkerMetrics | None, database: Database
) -> RiskEngine | None:
    """The risk engine of PAYGATE_RISK_RULES (docs/risk.md), or None when no rules run. A file that fails its
    checks stops the worker from starting (ConfigurationError names the rule and the problem)."""
    path = settings.effective_risk_rules()
    if path is None:
        return None
    try:
        return RiskEngine(
            path,
            Velocity(client, settings.redis_prefix),
            derive_key(settings, PHONE_KEY_PURPOSE),
            metrics,
            on_reload=reload_recorder(database),  # every reload is on record (docs/audit.md)
        )
    except RulesError as error:
        raise ConfigurationError(f"PAYGATE_RISK_RULES: {error}") from None


def webhook_endpoints(settings: Settings, database: Database) -> Endpoints:
    """Endpoint management for the CLI, the RPCs and the relay; https only in production."""
    ring = load_master_key(settings, create=True)
    audit.enable(database, audit.chain_key(settings))  # endpoint changes append to the trail (docs/audit.md)
    return Endpoints(database, ring, require_https=settings.mode == "production")


def build_relay(
    settings: Settings, database: Database, service: PaymentService, metrics: WorkerMetrics | None
) -> Relay:
    """The webhook relay this worker runs rounds of (one process at a time per stack; docs/events.md)."""
    return Relay(
        database,
        service.locks,
        webhook_endpoints(settings, database),
        metrics,
        schedule_s=settings.webhook_schedule() or DEFAULT_SCHEDULE_S,
        clock=utc_now,
        connect_timeout_s=settings.webhook_connect_timeout_s,
        read_timeout_s=settings.webhook_read_timeout_s,
        round_budget_s=settings.webhook_round_budget_s,
    )


def _providers(
    settings: Settings, metrics: WorkerMetrics | None, clock: Callable[[], datetime]
) -> list[ProviderChannel]:
    """The provider channels of the channels configuration file; none when there is no file (only SANDBOX)."""
    path = settings.effective_channels_config()
    if path is not None and settings.channels_config and not path.exists():
        raise ConfigurationError(f"PAYGATE_CHANNELS_CONFIG names {path}, which does not exist")
    if path is None or not path.exists():  # dev mode without the simulator's file: SANDBOX and WALLET only
        return []
    limits = ChannelLimits(
        connect_timeout_s=settings.channel_connect_timeout_s,
        read_timeout_s=settings.channel_read_timeout_s,
        max_in_flight=settings.channel_max_in_flight,
        breaker_failures=settings.channel_breaker_failures,
        breaker_open_s=settings.channel_breaker_open_s,
    )

    def observe(channel: str, purpose: str, outcome: str, seconds: float) -> None:
        if metrics is not None:
            metrics.channel_call_seconds.labels(channel, purpose, outcome).observe(seconds)

    def refused(channel: str, reason: str) -> None:
        if metrics is not None:
            metrics.channel_refusals.labels(channel, reason).inc()

    return load_channels(path, settings.effective_notify_base_url(), limits, clock, observe, refused)
