"""Rows of payment attempts (docs/architecture.md, "Channels").

An attempt belongs to the owner of its payment. The statements a caller's request can reach take the owner;
the ones that serve a provider (a notification names our attempt id, a statement lists them) or the janitor
(every owner's unsettled attempts) are unscoped, and their names say so. None is reachable from a caller's RPC
without the owner.

Status changes are guarded updates (`WHERE status = :expected`): two workers resolving the same attempt (a
notification and the janitor's query) cannot both apply it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, or_, select, update

from runtime.schema import payment_attempts, payments
from workers.domain.types import AttemptRecord, AttemptStatus

_INSERT = payment_attempts.insert()
_BY_ID = select(payment_attempts).where(
    payment_attempts.c.owner == bindparam("owner"), payment_attempts.c.attempt_id == bindparam("attempt_id")
)
_FOR_PROVIDER = select(payment_attempts).where(payment_attempts.c.attempt_id == bindparam("attempt_id"))
_TRANSITION = (
    update(payment_attempts)
    .where(
        payment_attempts.c.attempt_id == bindparam("target_attempt_id"),
        payment_attempts.c.status == bindparam("expected_status"),
    )
    .values(
        status=bindparam("new_status"),
        trade_no=bindparam("trade_no"),
        failure_reason=bindparam("failure_reason"),
        pay_url=bindparam("pay_url"),
        qr_code=bindparam("qr_code"),
        prepay_id=bindparam("prepay_id"),
        next_check_at=bindparam("next_check_at"),
        updated_at=bindparam("now"),
    )
)
_SCHEDULE = (
    update(payment_attempts)
    .where(
        payment_attempts.c.attempt_id == bindparam("target_attempt_id"),
        payment_attempts.c.status == bindparam("expected_status"),
    )
    .values(next_check_at=bindparam("next_check_at"), checks=payment_attempts.c.checks + 1)
)
_DUE = (
    select(payment_attempts)
    .where(
        payment_attempts.c.status.in_(
            [AttemptStatus.CREATED.value, AttemptStatus.PENDING.value, AttemptStatus.UNKNOWN.value]
        ),
        or_(payment_attempts.c.next_check_at.is_(None), payment_attempts.c.next_check_at <= bindparam("now")),
    )
    .order_by(payment_attempts.c.next_check_at)
    .limit(bindparam("limit"))
)
_POINT_PAYMENT = (
    update(payments)
    .where(payments.c.payment_id == bindparam("target_payment_id"))
    .values(attempt_id=bindparam("attempt_id"))
)


def insert(connection: Connection, record: AttemptRecord) -> None:
    """The attempt row, written (and committed) before the provider is called; the payment points at it."""
    values = {
        "attempt_id": record.attempt_id,
        "payment_id": record.payment_id,
        "owner": record.owner,
        "method": record.method.value,
        "status": record.status.value,
        "scene": record.scene,
        "payer": record.payer,
        "card_masked": record.card_masked,
        "amount_minor": record.amount_minor,
        "currency": record.currency,
        "trade_no": record.trade_no,
        "failure_reason": record.failure_reason,
        "pay_url": record.pay_url,
        "qr_code": record.qr_code,
        "prepay_id": record.prepay_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "next_check_at": record.next_check_at,
        "checks": record.checks,
    }
    connection.execute(_INSERT, values)
    connection.execute(_POINT_PAYMENT, {"target_payment_id": record.payment_id, "attempt_id": record.attempt_id})


def by_id(connection: Connection, owner: str, attempt_id: str) -> AttemptRecord | None:
    if not owner:
        raise ValueError("owner-scoped access needs the caller's owner")
    row = connection.execute(_BY_ID, {"owner": owner, "attempt_id": attempt_id}).first()
    return None if row is None else AttemptRecord.from_row(row)


def for_provider(connection: Connection, attempt_id: str) -> AttemptRecord | None:
    """Unscoped: a provider's notification, answer or statement names our attempt id (its out_trade_no)."""
    row = connection.execute(_FOR_PROVIDER, {"attempt_id": attempt_id}).first()
    return None if row is None else AttemptRecord.from_row(row)


def transition(
    connection: Connection,
    attempt: AttemptRecord,
    new: AttemptStatus,
    *,
    now: datetime,
    trade_no: str | None = None,
    failure_reason: str | None = None,
    pay_url: str | None = None,
    qr_code: str | None = None,
    prepay_id: str | None = None,
    next_check_at: datetime | None = None,
) -> bool:
    """Move the attempt from the status it was read in to `new`; False when someone else moved it first.
    Fields left None keep their value."""
    result = connection.execute(
        _TRANSITION,
        {
            "target_attempt_id": attempt.attempt_id,
            "expected_status": attempt.status.value,
            "new_status": new.value,
            "trade_no": attempt.trade_no if trade_no is None else trade_no,
            "failure_reason": attempt.failure_reason if failure_reason is None else failure_reason,
            "pay_url": attempt.pay_url if pay_url is None else pay_url,
            "qr_code": attempt.qr_code if qr_code is None else qr_code,
            "prepay_id": attempt.prepay_id if prepay_id is None else prepay_id,
            "next_check_at": next_check_at,
            "now": now,
        },
    )
    return bool(result.rowcount == 1)


def schedule_check(connection: Connection, attempt: AttemptRecord, next_check_at: datetime) -> bool:
    """Count one more query of an unsettled attempt and say when the next one is due."""
    result = connection.execute(
        _SCHEDULE,
        {
            "target_attempt_id": attempt.attempt_id,
            "expected_status": attempt.status.value,
            "next_check_at": next_check_at,
        },
    )
    return bool(result.rowcount == 1)


def due_for_check(connection: Connection, now: datetime, limit: int) -> list[AttemptRecord]:
    """Unscoped, for the janitor: unsettled attempts of every owner whose next check is due, oldest first."""
    rows = connection.execute(_DUE, {"now": now, "limit": limit}).all()
    return [AttemptRecord.from_row(row) for row in rows]
