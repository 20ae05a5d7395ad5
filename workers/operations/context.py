"""What every operation needs, built once per worker (workers/wiring.py) and passed to each call."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.db import Database
from runtime.errors import InsufficientFunds, NotFound
from runtime.metrics import WorkerMetrics
from workers.channels.nonces import NotificationNonces
from workers.channels.registry import Channels
from workers.codec.grammar import quote
from workers.codec.page_tokens import PageTokens
from workers.domain.types import AccountKind, PaymentRecord
from workers.execution.group_commit import GroupCommitter
from workers.execution.keyed import Executor
from workers.ledger.accounts import Account
from workers.risk.engine import RiskEngine
from workers.vault.cards import CardVault

ORDER_SCOPE = "order"
REFUND_SCOPE = "refund"
TRANSFER_SCOPE = "transfer"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Context:
    db: Database
    executor: Executor
    channels: Channels
    page_tokens: PageTokens
    platform_fee_bps: int = 0
    metrics: WorkerMetrics | None = None
    clock: Callable[[], datetime] = utc_now
    notification_nonces: NotificationNonces | None = None
    # When the janitor first asks about an attempt left unsettled (PENDING or UNKNOWN).
    first_check: timedelta = timedelta(seconds=5)
    # The group committer of wallet purchases (workers/operations/purchase_batch.py); None commits one at a time.
    purchases: GroupCommitter[Any] | None = None
    # The card vault (docs/security.md, "Card and personal data"); None: only processor tokens are accepted.
    vault: CardVault | None = None
    # The risk engine (docs/risk.md); None runs no rules.
    risk: RiskEngine | None = None

    def count_payment(self, record: PaymentRecord) -> None:
        if self.metrics is None:
            return
        labels = (record.payment_type.value, record.method.value, record.status.value)
        self.metrics.payments.labels(*labels).inc()
        self.metrics.money_moved_minor.labels(record.payment_type.value, record.currency).inc(record.amount_minor)

    def job_round(self, job: str) -> AbstractContextManager[None]:
        """Count and time one round of a background job that holds its lease (docs/metrics.md)."""
        return self.metrics.jobs.round(job) if self.metrics is not None else nullcontext()

    def job_lag(self, job: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.jobs.lag(job, seconds)

    def observe_stage(self, channel: str, stage: str, seconds: float) -> None:
        """Payment time by stage (docs/channels.md, "Payment time"): processing, provider_call, bank, notification."""
        if self.metrics is not None:
            self.metrics.payment_stage_seconds.labels(channel, stage).observe(max(0.0, seconds))


def lock_resource(kind: AccountKind, subject: str, currency: str) -> str:
    """Locks are named by account, not by row id, so they can be taken before the account exists."""
    return f"account:{kind.value}:{subject}:{currency}"


def payment_not_found(field: str) -> NotFound:
    """One message whether the payment does not exist or belongs to another owner: the two must look the same."""
    return NotFound(f"no payment with this {field} exists for this API key's owner; check the {field}")


def insufficient(user_id: str, amount_minor: int, currency: str, wallet: Account | None) -> InsufficientFunds:
    detail = "" if wallet is None else f" (available {wallet.balance_minor})"
    return InsufficientFunds(
        f"wallet of {quote(user_id)} holds less than {amount_minor} {currency}{detail}; "
        "top up first — the same id may be retried afterwards"
    )
