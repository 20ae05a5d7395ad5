"""Refunds through a provider (docs/channels.md, "Refunds").

Opening a refund (refunds.py) moves its amount out of the creator's payable and the platform's revenue (or the
top-up's wallet) into the channel's IN_TRANSIT account — money owed back to the payer through the channel — and
commits the refund PENDING. Then the provider is asked (`send`), and its answer — to that call, a notification
or the janitor's query — is applied here exactly once:

- SUCCEEDED: IN_TRANSIT → CLEARING (the channel paid the payer out of what it holds for us);
- FAILED: IN_TRANSIT → back where it came from, and the payment's refundable amount is restored;
- PENDING or UNKNOWN: nothing changes; the janitor asks again later.

`paygate ledger verify` checks that each channel's IN_TRANSIT balance equals the sum of its PENDING refunds.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection

from runtime.errors import FailedPrecondition, Unavailable
from workers.channels.base import NOT_FOUND, ProviderRefund, RefundOrder
from workers.domain.types import (
    PLATFORM_SUBJECT,
    AccountKind,
    Method,
    PaymentRecord,
    PaymentStatus,
    PaymentType,
    RefundRecord,
    RefundStatus,
)
from workers.execution.keyed import MAX_ATTEMPTS, ConcurrentChange
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.operations.context import Context
from workers.store import attempts, records
from workers.store import refunds as refund_rows
from workers.store.refunds import StoredRefund

log = logging.getLogger(__name__)


class RefundMismatch(FailedPrecondition):
    reason = "CHANNEL_MISMATCH"


def through_provider(ctx: Context, payment: PaymentRecord) -> bool:
    """Whether refunds of this payment go through a provider (not the wallet, not the in-process sandbox)."""
    return ctx.channels.provider(payment.method) is not None


def send(ctx: Context, out_refund_no: str) -> StoredRefund:
    """Ask the provider to carry out a PENDING refund and apply its answer; the provider deduplicates by
    out_refund_no, so asking again after a lost answer is safe."""
    stored, method, order = _order(ctx, out_refund_no)
    if stored.record.status is not RefundStatus.PENDING:
        return stored
    return apply(ctx, out_refund_no, ctx.channels.get(method).refund(order))


def refresh(ctx: Context, out_refund_no: str) -> StoredRefund:
    """Ask the provider where a PENDING refund stands and apply the answer. A refund the provider has never
    heard of was never sent (a crash, a busy channel): it is sent now — never reversed for that alone."""
    stored, method, order = _order(ctx, out_refund_no)
    if stored.record.status is not RefundStatus.PENDING:
        return stored
    channel = ctx.channels.get(method)
    answer = channel.refund_query(order)
    if answer.status is RefundStatus.FAILED and answer.failure_reason == NOT_FOUND:
        answer = channel.refund(order)
    return apply(ctx, out_refund_no, answer)


def apply(ctx: Context, out_refund_no: str, answer: ProviderRefund) -> StoredRefund:
    """Apply the provider's word on a refund; returns the refund as it is afterwards."""
    for _round in range(MAX_ATTEMPTS):
        stored = _read(ctx, out_refund_no)
        if stored.record.status is not RefundStatus.PENDING or answer.status not in (
            RefundStatus.SUCCEEDED,
            RefundStatus.FAILED,
        ):
            return stored  # settled already (a duplicate), or an answer that settles nothing
        if answer.amount_minor is not None and answer.amount_minor != stored.record.amount_minor:
            raise RefundMismatch(
                f"the channel reports {answer.amount_minor} for refund {out_refund_no}, which asked for "
                f"{stored.record.amount_minor}; nothing was applied"
            )
        try:
            if answer.status is RefundStatus.SUCCEEDED:
                _settle(ctx, stored, answer)
            else:
                _reverse(ctx, stored, answer)
        except ConcurrentChange:
            ctx.executor.count_retry("concurrent_change")
            continue
        return _read(ctx, out_refund_no)
    raise Unavailable(f"refund {out_refund_no} kept changing; deliver the provider's answer again")


def _read(ctx: Context, out_refund_no: str) -> StoredRefund:
    with ctx.db.read() as connection:
        stored = refund_rows.for_provider(connection, out_refund_no)
    if stored is None:
        raise LookupError(f"no refund {out_refund_no}")
    return stored


def _payment(connection: Connection, stored: StoredRefund) -> PaymentRecord:
    payment = records.payment_by_id(connection, stored.owner, stored.record.payment_id)
    if payment is None:  # cannot happen: a refund row references its payment
        raise LookupError(f"refund {stored.record.refund_id} names a missing payment")
    return payment


def _order(ctx: Context, out_refund_no: str) -> tuple[StoredRefund, Method, RefundOrder]:
    """The refund, its payment's channel and what to ask that channel, in one read."""
    with ctx.db.read() as connection:
        stored = refund_rows.for_provider(connection, out_refund_no)
        if stored is None:
            raise LookupError(f"no refund {out_refund_no}")
        payment = _payment(connection, stored)
        attempt = attempts.by_id(connection, stored.owner, payment.attempt_id or "")
    if attempt is None:
        raise LookupError(f"payment {payment.payment_id} has no attempt to refund")
    order = RefundOrder(
        out_trade_no=attempt.attempt_id,
        trade_no=attempt.trade_no,
        out_refund_no=out_refund_no,
        amount_minor=stored.record.amount_minor,
        total_minor=attempt.amount_minor,
        currency=stored.record.currency,
        reason=stored.record.reason or "refund",
        notify_url="",
        created_at=stored.record.created_at,
    )
    return stored, payment.method, order


def _settle(ctx: Context, stored: StoredRefund, answer: ProviderRefund) -> None:
    record, now = stored.record, ctx.clock()
    with ctx.db.write() as connection:
        method = _payment(connection, stored).method.value
        if not refund_rows.transition(
            connection,
            record.out_refund_no,
            RefundStatus.SUCCEEDED,
            channel_refund_no=answer.refund_no,
            failure_reason="",
            now=now,
        ):
            raise ConcurrentChange(record.out_refund_no)
        in_transit = accounts.ensure_account(connection, AccountKind.IN_TRANSIT, method, record.currency, now)
        clearing = accounts.ensure_account(connection, AccountKind.CLEARING, method, record.currency, now)
        changes = [BalanceChange(in_transit, -record.amount_minor), BalanceChange(clearing, record.amount_minor)]
        entry = Entry("refund_settled", stored.owner, record.payment_id, record.refund_id, record.currency, now)
        with move(connection, changes, entry):
            pass


def _reverse(ctx: Context, stored: StoredRefund, answer: ProviderRefund) -> None:
    """The provider refused the refund: the money goes back where it came from, and can be refunded again."""
    record, now = stored.record, ctx.clock()
    reason = answer.failure_reason or "refused by the channel"
    with ctx.db.write() as connection:
        payment = _payment(connection, stored)
        if not refund_rows.transition(
            connection,
            record.out_refund_no,
            RefundStatus.FAILED,
            channel_refund_no=answer.refund_no,
            failure_reason=reason,
            now=now,
        ):
            raise ConcurrentChange(record.out_refund_no)
        in_transit = accounts.ensure_account(
            connection, AccountKind.IN_TRANSIT, payment.method.value, record.currency, now
        )
        changes = [
            BalanceChange(in_transit, -record.amount_minor),
            *_reversal_credits(connection, payment, record, now),
        ]
        entry = Entry("refund_reversal", stored.owner, record.payment_id, record.refund_id, record.currency, now)
        with move(connection, changes, entry):
            _restore_refundable(connection, payment, record, now)
    log.warning("channel refund failed", extra={"fields": {"refund": record.out_refund_no, "reason": reason}})


def _reversal_credits(
    connection: Connection, payment: PaymentRecord, record: RefundRecord, now: datetime
) -> list[BalanceChange]:
    currency = record.currency
    if payment.status in (PaymentStatus.CLOSED, PaymentStatus.FAILED) or payment.payment_type is PaymentType.TOP_UP:
        # A top-up's refund came out of its wallet; late money (paid after we closed) is the payer's: either
        # way, the payer's wallet holds it now, to spend or to have refunded again.
        wallet = accounts.ensure_account(connection, AccountKind.WALLET, payment.user_id, currency, now)
        return [BalanceChange(wallet, record.amount_minor)]
    revenue = accounts.ensure_account(connection, AccountKind.REVENUE, PLATFORM_SUBJECT, currency, now)
    changes = [BalanceChange(revenue, record.platform_fee_minor)]
    if record.creator_amount_minor:
        payable = accounts.ensure_account(connection, AccountKind.PAYABLE, payment.payee_id, currency, now)
        changes.append(BalanceChange(payable, record.creator_amount_minor))
    return changes


def _restore_refundable(connection: Connection, payment: PaymentRecord, record: RefundRecord, now: datetime) -> None:
    if payment.status in (PaymentStatus.CLOSED, PaymentStatus.FAILED):
        return  # late money: the payment stays as it was; the wallet credit above says where the money is
    refunded = payment.refunded_minor - record.amount_minor
    status = PaymentStatus.SUCCEEDED if refunded == 0 else PaymentStatus.PARTIALLY_REFUNDED
    if not records.record_refund_on_payment(
        connection, payment, new_status=status, new_refunded_minor=refunded, now=now
    ):
        raise ConcurrentChange(payment.payment_id)
