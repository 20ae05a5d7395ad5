"""Applying what a provider says about an attempt (docs/architecture.md, "Channels").

Every source of truth about an attempt ends here: the answer to our own call, a notification, the janitor's
query, the sandbox's `paygate sandbox confirm`. Each transition is a guarded update of the attempt and of its
payment in one transaction, so a duplicate or a racing second source changes nothing (it re-reads and finds the
work done). Money moves only when the provider says SUCCEEDED, with the exact amount and currency we asked for.

Money the provider reports after we closed or failed the payment ("late money") is recorded coming in and goes
straight back out (an automatic refund); the payment stays CLOSED or FAILED and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from runtime.errors import FailedPrecondition, IllegalTransition, Unavailable
from runtime.ids import new_id
from workers.channels.base import ProviderState
from workers.domain import states
from workers.domain.types import (
    AccountKind,
    AttemptRecord,
    AttemptStatus,
    PaymentRecord,
    PaymentStatus,
    RefundRecord,
    RefundStatus,
)
from workers.events import emit
from workers.execution.keyed import MAX_ATTEMPTS, ConcurrentChange
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.operations import channel_refunds, money
from workers.operations.context import Context, payment_not_found
from workers.store import attempts, records

log = logging.getLogger(__name__)

LATE_MONEY_REASON = "paid at the channel after the payment was {status}; refunded automatically"
# What an attempt's end means for a PENDING payment, and the reason it gives when the provider gave none.
_PAYMENT_ENDS = {
    AttemptStatus.FAILED: (PaymentStatus.FAILED, "declined by the channel"),
    AttemptStatus.CLOSED: (PaymentStatus.CLOSED, "closed at the channel before it was paid"),
}


class ProviderMismatch(FailedPrecondition):
    """The provider's account of an attempt contradicts ours (amount, currency): nothing is applied."""

    reason = "CHANNEL_MISMATCH"


@dataclass(frozen=True)
class Settled:
    payment: PaymentRecord
    attempt: AttemptRecord


def apply(ctx: Context, attempt_id: str, state: ProviderState) -> PaymentRecord:
    """Apply the provider's `state` of attempt `attempt_id`; returns the payment as it is afterwards."""
    for _round in range(MAX_ATTEMPTS):
        current = _read(ctx, attempt_id)
        try:
            _apply_once(ctx, current, state)
        except ConcurrentChange:
            ctx.executor.count_retry("concurrent_change")
            continue  # another source moved it meanwhile: look again
        return _read(ctx, attempt_id).payment
    raise Unavailable(f"attempt {attempt_id} kept changing; deliver the provider's answer again")


def confirm_payment(ctx: Context, payment_id: str) -> PaymentRecord:
    """The sandbox's stand-in for a provider notification: the payment's attempt was paid."""
    with ctx.db.read() as connection:
        payment = records.payment_for_channel_notification(connection, payment_id)
    if payment is None or payment.attempt_id is None:
        raise payment_not_found("payment_id")
    if payment.status is PaymentStatus.FAILED:
        states.check(payment.status, PaymentStatus.SUCCEEDED)
    return apply(ctx, payment.attempt_id, ProviderState(AttemptStatus.SUCCEEDED, out_trade_no=payment.attempt_id))


def _read(ctx: Context, attempt_id: str) -> Settled:
    with ctx.db.read() as connection:
        attempt = attempts.for_provider(connection, attempt_id)
        payment = records.payment_for_channel_notification(connection, attempt.payment_id) if attempt else None
    if attempt is None or payment is None:
        raise payment_not_found("payment_id")
    return Settled(payment, attempt)


def _apply_once(ctx: Context, current: Settled, state: ProviderState) -> None:
    attempt, payment = current.attempt, current.payment
    if state.status is attempt.status or state.status is AttemptStatus.CREATED:
        return  # nothing new: a duplicate notification, or a query that tells what we know
    if state.status is AttemptStatus.UNKNOWN and attempt.status is not AttemptStatus.CREATED:
        return  # a query that could not tell: what we knew still stands
    if not states.attempt_allowed(attempt.status, state.status):
        if attempt.status.settled:
            return  # a stale answer (PENDING after SUCCEEDED, say): the settled state stands
        raise IllegalTransition(f"a {attempt.status.name} attempt cannot become {state.status.name}")
    now = ctx.clock()
    if state.status is AttemptStatus.SUCCEEDED:
        _check_amount(attempt, state)
        if payment.status is PaymentStatus.PENDING:
            _settle(ctx, payment, attempt, state, now)
        elif payment.status in (PaymentStatus.CLOSED, PaymentStatus.FAILED) and payment.refunded_minor == 0:
            _refund_late_money(ctx, payment, attempt, state, now)
        return
    with ctx.db.write() as connection:
        _transition_attempt(ctx, connection, attempt, state, now)
        ends = _PAYMENT_ENDS.get(state.status)
        if ends is not None and payment.status is PaymentStatus.PENDING:
            new_status, default_reason = ends
            _transition_payment(connection, payment, new_status, None, state.failure_reason or default_reason, 0, now)


def _check_amount(attempt: AttemptRecord, state: ProviderState) -> None:
    if state.amount_minor is not None and state.amount_minor != attempt.amount_minor:
        raise ProviderMismatch(
            f"the channel reports {state.amount_minor} for attempt {attempt.attempt_id}, "
            f"which asked for {attempt.amount_minor}; nothing was applied"
        )
    if state.currency and state.currency != attempt.currency:
        raise ProviderMismatch(
            f"the channel reports currency {state.currency} for attempt {attempt.attempt_id}, "
            f"which asked for {attempt.currency}; nothing was applied"
        )


def _transition_attempt(
    ctx: Context, connection: Connection, attempt: AttemptRecord, state: ProviderState, now: datetime
) -> None:
    # An unsettled attempt is next asked about by the janitor after a while; a settled one never again.
    next_check_at = None if state.status.settled else now + ctx.first_check
    moved = attempts.transition(
        connection,
        attempt,
        state.status,
        now=now,
        trade_no=state.trade_no or None,
        failure_reason=state.failure_reason or None,
        pay_url=state.pay_url or None,
        qr_code=state.qr_code or None,
        prepay_id=state.prepay_id or None,
        next_check_at=next_check_at,
    )
    if not moved:
        raise ConcurrentChange(attempt.attempt_id)


def _transition_payment(
    connection: Connection,
    payment: PaymentRecord,
    new: PaymentStatus,
    entry_id: str | None,
    reason: str,
    refunded_minor: int,
    now: datetime,
) -> None:
    moved = records.transition_payment(
        connection,
        payment.owner,
        payment.payment_id,
        expected=payment.status,
        new=new,
        entry_id=entry_id,
        failure_reason=reason,
        refunded_minor=refunded_minor,
        now=now,
    )
    if not moved:
        raise ConcurrentChange(payment.payment_id)


def _settle(ctx: Context, payment: PaymentRecord, attempt: AttemptRecord, state: ProviderState, now: datetime) -> None:
    states.check(payment.status, PaymentStatus.SUCCEEDED)
    # "Bank time": from opening the order at the provider to its confirmation reaching us (payer and provider).
    ctx.observe_stage(payment.method.value, "bank", (now - attempt.created_at).total_seconds())
    with ctx.db.write() as connection:
        _transition_attempt(ctx, connection, attempt, state, now)
        entry = Entry(
            kind=payment.payment_type.value,
            owner=payment.owner,
            payment_id=payment.payment_id,
            reference_id=payment.payment_id,
            currency=payment.currency,
            now=now,
        )
        with move(connection, money.money_in(connection, payment, now), entry) as entry_id:
            _transition_payment(connection, payment, PaymentStatus.SUCCEEDED, entry_id, "", 0, now)


def _refund_late_money(
    ctx: Context, payment: PaymentRecord, attempt: AttemptRecord, state: ProviderState, now: datetime
) -> None:
    """The payer was charged for an order we gave up on: the money is recorded coming in, and goes straight back
    out as an automatic refund. Through a provider, the refund is a real one: the money waits in IN_TRANSIT and
    the provider is asked to return it (channel_refunds.py). In-process (the sandbox), it goes back at once,
    through the payer's wallet; that debit needs no lock, since the credit just before it covers it."""
    refund_id = f"auto-{payment.payment_id}"
    reason = LATE_MONEY_REASON.format(status=payment.status.name)
    via_provider = channel_refunds.through_provider(ctx, payment)
    amount = payment.amount_minor
    refund = _auto_refund(payment, refund_id, reason, "", now)
    with ctx.db.write() as connection:
        _transition_attempt(ctx, connection, attempt, state, now)
        clearing = accounts.ensure_account(
            connection, AccountKind.CLEARING, payment.method.value, payment.currency, now
        )
        holder_kind, holder_subject = (
            (AccountKind.IN_TRANSIT, payment.method.value) if via_provider else (AccountKind.WALLET, payment.user_id)
        )
        holder = accounts.ensure_account(connection, holder_kind, holder_subject, payment.currency, now)
        incoming = Entry("late_payment", payment.owner, payment.payment_id, payment.payment_id, payment.currency, now)
        with move(connection, [BalanceChange(clearing, -amount), BalanceChange(holder, amount)], incoming) as entry_id:
            _transition_payment(connection, payment, payment.status, entry_id, reason, amount, now)
        if via_provider:
            refund = replace(
                refund,
                entry_id=entry_id,
                status=RefundStatus.PENDING,
                out_refund_no=new_id("rfd", separator=""),
            )
            emit.late_payment_refunded(connection, payment.owner, refund)
            records.insert_refund(connection, payment.owner, refund)
        else:
            outgoing = Entry("refund", payment.owner, payment.payment_id, refund_id, payment.currency, now)
            changes = [BalanceChange(holder, -amount), BalanceChange(clearing, amount)]
            with move(connection, changes, outgoing) as refund_entry_id:
                refund = replace(refund, entry_id=refund_entry_id)
                emit.late_payment_refunded(connection, payment.owner, refund)
                records.insert_refund(connection, payment.owner, refund)
    log.warning("late money refunded", extra={"fields": {"payment_id": payment.payment_id}})
    if via_provider:
        _send_quietly(ctx, refund.out_refund_no)


def _send_quietly(ctx: Context, out_refund_no: str) -> None:
    """Ask the provider now; if that fails, the janitor asks again (the refund is PENDING and scheduled)."""
    try:
        channel_refunds.send(ctx, out_refund_no)
    except Exception:
        log.exception("automatic refund not sent yet", extra={"fields": {"refund": out_refund_no}})


def _auto_refund(payment: PaymentRecord, refund_id: str, reason: str, entry_id: str, now: datetime) -> RefundRecord:
    return RefundRecord(
        refund_id=refund_id,
        payment_id=payment.payment_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        creator_amount_minor=0,
        platform_fee_minor=0,
        reason=reason,
        entry_id=entry_id,
        created_at=now,
        payment_status=payment.status,
    )
