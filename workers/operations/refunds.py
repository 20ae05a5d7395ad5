"""RefundPayment: money back out of a payment, partially or in full, race-safe (docs/ledger.md, "Refunds").

A top-up is refunded out of the wallet it filled (fenced: never below zero) back to the channel. A purchase is
refunded out of the creator's payable (fenced, never negative) and the platform's revenue (may go negative),
back to the payer's wallet, or to the channel's clearing account for a channel payment. The payment's refunded
total is a guarded update from the value this attempt read, so two concurrent refunds can never both take the
last of it: the loser re-reads and is refused or applied on the new total.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from runtime import audit
from runtime.errors import FailedPrecondition
from runtime.ids import new_id
from workers.domain import states
from workers.domain.pricing import allocate_refund
from workers.domain.types import (
    PLATFORM_SUBJECT,
    AccountKind,
    Caller,
    Method,
    PaymentRecord,
    PaymentStatus,
    PaymentType,
    RefundCommand,
    RefundRecord,
    RefundStatus,
    request_hash,
)
from workers.execution.idempotency import Claim
from workers.execution.keyed import ConcurrentChange
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.operations import channel_refunds
from workers.operations.context import REFUND_SCOPE, Context, lock_resource, payment_not_found
from workers.store import records
from workers.store.refunds import StoredRefund


@dataclass(frozen=True)
class Source:
    """An account a refund takes money from; `fenced` when it must never go negative (taken under a lock)."""

    kind: AccountKind
    subject: str
    amount_minor: int
    fenced: bool


@dataclass(frozen=True)
class Plan:
    amount_minor: int
    new_status: PaymentStatus
    creator_minor: int
    fee_minor: int
    sources: list[Source]
    destination: tuple[AccountKind, str]


def refund_payment(ctx: Context, caller: Caller, command: RefundCommand) -> RefundRecord:
    return ctx.executor.run(
        caller,
        REFUND_SCOPE,
        command.refund_id,
        request_hash(command),
        lambda claim: _through_provider(ctx, _refund_once(ctx, caller, command, claim), channel_refunds.send),
        # The same refund again answers it as it is now: while PENDING, the provider is asked where it stands.
        lambda _claim, stored: _through_provider(ctx, RefundRecord.from_json(stored), channel_refunds.refresh),
    )


def _through_provider(ctx: Context, record: RefundRecord, ask: Callable[[Context, str], StoredRefund]) -> RefundRecord:
    """Wallet and sandbox refunds are done when committed; a provider refund is sent (or looked up) and answered
    with its current status."""
    if not record.out_refund_no or record.status is not RefundStatus.PENDING:
        return record
    current = ask(ctx, record.out_refund_no).record
    return replace(
        record,
        status=current.status,
        channel_refund_no=current.channel_refund_no,
        failure_reason=current.failure_reason,
    )


def _refund_once(ctx: Context, caller: Caller, command: RefundCommand, claim: Claim) -> RefundRecord:
    with ctx.db.read() as connection:
        payment = records.payment_by_id(connection, caller.owner, command.payment_id)
    if payment is None:
        raise payment_not_found("payment_id")  # also another owner's payment: it must look missing
    via_provider = channel_refunds.through_provider(ctx, payment)
    plan = _plan(payment, command.amount_minor, via_provider)
    fenced = [lock_resource(s.kind, s.subject, payment.currency) for s in plan.sources if s.fenced]
    with ctx.executor.leases(*fenced) as leases:
        now = ctx.clock()
        with ctx.db.write() as connection:
            changes = [
                BalanceChange(
                    accounts.ensure_account(connection, s.kind, s.subject, payment.currency, now),
                    -s.amount_minor,
                    leases[lock_resource(s.kind, s.subject, payment.currency)] if s.fenced else None,
                )
                for s in plan.sources
            ]
            destination = accounts.ensure_account(connection, *plan.destination, payment.currency, now)
            changes.append(BalanceChange(destination, plan.amount_minor))
            guarded = records.record_refund_on_payment(
                connection,
                payment,
                new_status=plan.new_status,
                new_refunded_minor=payment.refunded_minor + plan.amount_minor,
                now=now,
            )
            if not guarded:
                raise ConcurrentChange(payment.payment_id)
            entry = Entry(
                kind="refund",
                owner=caller.owner,
                payment_id=payment.payment_id,
                reference_id=command.refund_id,
                currency=payment.currency,
                now=now,
                on_insufficient=lambda: FailedPrecondition(
                    f"cannot take the refund back from {payment.payee_id or payment.user_id}: its balance is "
                    "lower than its share of the refund (already paid out or spent)",
                    reason="INSUFFICIENT_FUNDS",
                ),
            )
            with move(connection, changes, entry) as entry_id:
                record = RefundRecord(
                    refund_id=command.refund_id,
                    payment_id=payment.payment_id,
                    amount_minor=plan.amount_minor,
                    currency=payment.currency,
                    creator_amount_minor=plan.creator_minor,
                    platform_fee_minor=plan.fee_minor,
                    reason=command.reason,
                    entry_id=entry_id,
                    created_at=now,
                    payment_status=plan.new_status,
                    status=RefundStatus.PENDING if via_provider else RefundStatus.SUCCEEDED,
                    # Letters and digits only: the one refund number every provider accepts.
                    out_refund_no=new_id("rfd", separator="") if via_provider else "",
                )
                records.insert_refund(connection, caller.owner, record)
                ctx.executor.idempotency.record(connection, claim, command.refund_id, record.to_json(), now)
            _audit(connection, caller, record)  # last, after the balances: runtime/audit.py
    return record


def _audit(connection: Connection, caller: Caller, record: RefundRecord) -> None:
    """A refund asked for through the API is a manual refund: the trail keeps who asked for what (docs/audit.md)."""
    audit.record(
        connection,
        actor=audit.key_actor(caller.key_id) if caller.key_id else audit.SYSTEM,
        action="refund.create",
        subject=record.refund_id,
        details={
            "owner": caller.owner,
            "payment_id": record.payment_id,
            "amount_minor": record.amount_minor,
            "currency": record.currency,
            "reason": audit.bounded_text(record.reason),
            "entry_id": record.entry_id,
            "status": record.status.name,
        },
    )


def _plan(payment: PaymentRecord, requested_minor: int, via_provider: bool) -> Plan:
    """What this refund moves, checked against the payment as read. Through a provider, the money goes to the
    channel's IN_TRANSIT account until the provider confirms the refund (channel_refunds.py)."""
    if payment.status not in states.REFUNDABLE:
        raise FailedPrecondition(
            f"payment {payment.payment_id} is {payment.status.name}; only SUCCEEDED or PARTIALLY_REFUNDED "
            "payments can be refunded",
            reason="PAYMENT_NOT_REFUNDABLE",
        )
    remaining = payment.amount_minor - payment.refunded_minor
    amount = requested_minor or remaining
    if amount > remaining:
        raise FailedPrecondition(
            f"refund of {amount} exceeds the {remaining} {payment.currency} still refundable on "
            f"{payment.payment_id} (paid {payment.amount_minor}, refunded {payment.refunded_minor})",
            reason="REFUND_EXCEEDS_PAYMENT",
        )
    new_refunded = payment.refunded_minor + amount
    new_status = PaymentStatus.REFUNDED if new_refunded == payment.amount_minor else PaymentStatus.PARTIALLY_REFUNDED
    states.check(payment.status, new_status)
    channel_destination = (AccountKind.IN_TRANSIT if via_provider else AccountKind.CLEARING, payment.method.value)
    if payment.payment_type is PaymentType.TOP_UP:
        return Plan(
            amount, new_status, 0, 0, [Source(AccountKind.WALLET, payment.user_id, amount, True)], channel_destination
        )
    creator_minor, fee_minor = allocate_refund(
        payment.amount_minor, payment.creator_amount_minor, payment.refunded_minor, amount
    )
    sources = [
        Source(AccountKind.PAYABLE, payment.payee_id, creator_minor, True),
        Source(AccountKind.REVENUE, PLATFORM_SUBJECT, fee_minor, False),
    ]
    destination = (AccountKind.WALLET, payment.user_id) if payment.method is Method.WALLET else channel_destination
    return Plan(amount, new_status, creator_minor, fee_minor, [s for s in sources if s.amount_minor != 0], destination)
