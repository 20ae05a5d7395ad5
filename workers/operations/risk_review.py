"""Reviews of payments the risk engine held (docs/risk.md, "Operating reviews"): an operator lists them, then
releases or refuses each. `paygate risk review …` runs these against the database and Redis directly, as the other
operator commands do; the worker's own code does the work, so a release is exactly the allowed path.

Both decisions are guarded transitions out of IN_REVIEW (`UPDATE … WHERE status = 'in_review'`), so of a release
and a refusal racing — two operators, two terminals — exactly one wins and the other is told it was decided.

- release, wallet purchase: the debit with the wallet's fenced lease, in one transaction with the payment's move
  to SUCCEEDED (`payments.debit_wallet`, the purchase path's own code). Not enough money: nothing moves, the
  payment stays IN_REVIEW (top up, then release again — or refuse it).
- release, channel payment: the attempt written at hold (never sent) is closed, and a fresh one is opened at the
  provider exactly as a new payment's (`payments.advance`), so its order lives from the release on; the payment is
  PENDING with what the payer needs, or already settled if the provider answered so.
- refuse: FAILED with the operator's reason; a held channel attempt is closed. Nothing moved, nothing to undo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from runtime import audit
from runtime.errors import IllegalTransition, NotFound
from workers.domain import states
from workers.domain.types import AttemptRecord, AttemptStatus, Method, PaymentRecord, PaymentStatus
from workers.events import emit
from workers.operations import money, payments
from workers.operations.context import Context
from workers.store import attempts, records

MAX_LISTED = 500
REFUSAL_PREFIX = "refused after risk review: "


def in_review(ctx: Context, limit: int = MAX_LISTED) -> list[PaymentRecord]:
    with ctx.db.read() as connection:
        return records.payments_in_review_for_operator(connection, min(limit, MAX_LISTED))


def release(ctx: Context, payment_id: str, reason: str, actor: str) -> PaymentRecord:
    """`actor`: who decided (runtime/audit.py), kept in the audit trail in the release's own transaction."""
    held, attempt = _held(ctx, payment_id)
    decision = _Decision(actor, "risk.review_release", reason)
    if held.method is Method.WALLET:
        return _release_wallet(ctx, held, decision)
    return _release_channel(ctx, held, attempt, decision)


def refuse(ctx: Context, payment_id: str, reason: str, actor: str) -> PaymentRecord:
    held, attempt = _held(ctx, payment_id)
    now = ctx.clock()
    failure = (REFUSAL_PREFIX + reason)[:256]
    with ctx.db.write() as connection:
        _move(connection, held, PaymentStatus.FAILED, now, failure_reason=failure)
        if attempt is not None:
            _close_unsent(connection, attempt, now)
        refused = records.payment_by_id(connection, held.owner, held.payment_id)
        _Decision(actor, "risk.review_refuse", reason).record(connection, held)
    assert refused is not None
    return refused


@dataclass(frozen=True)
class _Decision:
    """An operator's review decision, as the audit trail keeps it (docs/audit.md): written last in the
    transaction that carries it out, so the entry exists exactly when the decision took effect."""

    actor: str
    action: str
    reason: str

    def record(self, connection: Connection, held: PaymentRecord) -> None:
        details: dict[str, str | int | bool | None] = {
            "owner": held.owner,
            "amount_minor": held.amount_minor,
            "currency": held.currency,
            "method": held.method.value,
            "score": held.risk_score,
            "rules": held.risk_reasons,
            "reason": audit.bounded_text(self.reason),
        }
        audit.record(connection, actor=self.actor, action=self.action, subject=held.payment_id, details=details)


def _held(ctx: Context, payment_id: str) -> tuple[PaymentRecord, AttemptRecord | None]:
    with ctx.db.read() as connection:
        payment = records.payment_for_operator(connection, payment_id)
        attempt = (
            attempts.by_id(connection, payment.owner, payment.attempt_id) if payment and payment.attempt_id else None
        )
    if payment is None:
        raise NotFound(f"no payment {payment_id!r}")
    if payment.status is not PaymentStatus.IN_REVIEW:
        raise IllegalTransition(f"payment {payment_id} is {payment.status.name}, not IN_REVIEW: it was decided already")
    return payment, attempt


def _move(
    connection: Connection,
    payment: PaymentRecord,
    new: PaymentStatus,
    now: datetime,
    *,
    entry_id: str | None = None,
    failure_reason: str = "",
) -> None:
    """The guarded transition out of IN_REVIEW; raising rolls the whole transaction back (money included)."""
    states.check(PaymentStatus.IN_REVIEW, new)
    moved = records.transition_payment(
        connection,
        payment.owner,
        payment.payment_id,
        expected=PaymentStatus.IN_REVIEW,
        new=new,
        entry_id=entry_id,
        failure_reason=failure_reason,
        refunded_minor=0,
        now=now,
    )
    if not moved:
        raise IllegalTransition(f"payment {payment.payment_id} was decided meanwhile by another review")


def _release_wallet(ctx: Context, held: PaymentRecord, decision: _Decision) -> PaymentRecord:
    def write(connection: Connection, settled: PaymentRecord, now: datetime) -> None:
        emit.payment_released(connection, replace(settled, updated_at=now))
        _move(connection, held, PaymentStatus.SUCCEEDED, now, entry_id=settled.entry_id)
        decision.record(connection, held)

    settled = payments.debit_wallet(ctx, lambda _now: held, write)
    with ctx.db.read() as connection:
        current = records.payment_by_id(connection, held.owner, held.payment_id)
    return current or settled


def _release_channel(
    ctx: Context, held: PaymentRecord, unsent: AttemptRecord | None, decision: _Decision
) -> PaymentRecord:
    channel = ctx.channels.get(held.method)  # UNIMPLEMENTED / UNAVAILABLE before anything is written
    channel.check_available()
    with ctx.db.read() as connection:  # as the allowed path does before it asks the provider for money
        money.check_room(connection, held)
    now = ctx.clock()
    scene = unsent.scene if unsent else payments.DEFAULT_SCENE[held.method].value
    attempt = payments.new_attempt(
        held,
        scene,
        unsent.payer if unsent else "",
        now,
        next_check_at=now + payments.CREATED_CHECK_DELAY,
        card_masked=unsent.card_masked if unsent else "",
    )
    with ctx.db.write() as connection:
        _move(connection, held, PaymentStatus.PENDING, now)
        if unsent is not None:
            _close_unsent(connection, unsent, now)
        attempts.insert(connection, attempt)
        pending = records.payment_by_id(connection, held.owner, held.payment_id)
        assert pending is not None
        emit.payment_released(connection, pending)
        decision.record(connection, held)
    return payments.advance(ctx, channel, pending, attempt, payments.Stopwatch())


def _close_unsent(connection: Connection, attempt: AttemptRecord, now: datetime) -> None:
    """The attempt written at hold time never reached its provider: closing it here needs no provider call."""
    if attempt.status is AttemptStatus.CREATED:
        attempts.transition(
            connection, attempt, AttemptStatus.CLOSED, now=now, failure_reason="never sent: held for risk review"
        )
