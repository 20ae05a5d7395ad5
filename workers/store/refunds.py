"""Rows of refunds through a provider (docs/channels.md, "Refunds"): PENDING until the provider confirms.

The statements a caller reaches take the owner (`by_id`). The provider's answers, notifications and statements
name our refund number at the provider (`out_refund_no`), and the janitor asks about every owner's pending
refunds: those statements are unscoped, and their names say so. Status changes are guarded updates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, Row, bindparam, or_, select, update

from runtime.schema import payments, refunds
from workers.domain.types import PaymentStatus, RefundRecord, RefundStatus
from workers.events import emit
from workers.store.moments import utc, utc_or_none

_BY_ID = select(refunds).where(refunds.c.owner == bindparam("owner"), refunds.c.refund_id == bindparam("refund_id"))
_FOR_PROVIDER = select(refunds).where(refunds.c.out_refund_no == bindparam("out_refund_no"))
# The refund as its event shows it: with its payment's status as it is now.
_WITH_PAYMENT_STATUS = (
    select(refunds, payments.c.status.label("current_payment_status"))
    .join(payments, (payments.c.owner == refunds.c.owner) & (payments.c.payment_id == refunds.c.payment_id))
    .where(refunds.c.out_refund_no == bindparam("out_refund_no"))
)
_TRANSITION = (
    update(refunds)
    .where(refunds.c.out_refund_no == bindparam("target"), refunds.c.status == bindparam("expected"))
    .values(
        status=bindparam("new_status"),
        channel_refund_no=bindparam("channel_refund_no"),
        failure_reason=bindparam("failure_reason"),
        updated_at=bindparam("now"),
        next_check_at=None,
    )
)
_SCHEDULE = (
    update(refunds)
    .where(refunds.c.out_refund_no == bindparam("target"), refunds.c.status == RefundStatus.PENDING.value)
    .values(next_check_at=bindparam("next_check_at"), checks=refunds.c.checks + 1)
)
_DUE = (
    select(refunds)
    .where(
        refunds.c.status == RefundStatus.PENDING.value,
        refunds.c.out_refund_no.is_not(None),
        or_(refunds.c.next_check_at.is_(None), refunds.c.next_check_at <= bindparam("now")),
    )
    .order_by(refunds.c.next_check_at)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True)
class StoredRefund:
    owner: str
    record: RefundRecord
    checks: int
    next_check_at: datetime | None = None  # when the janitor asks the provider next (None: at once)


def _stored(row: Row[Any]) -> StoredRefund:
    created_at = utc(row.created_at)
    record = RefundRecord(
        refund_id=row.refund_id,
        payment_id=row.payment_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        creator_amount_minor=row.creator_amount_minor,
        platform_fee_minor=row.platform_fee_minor,
        reason=row.reason,
        entry_id=row.entry_id,
        created_at=created_at,
        payment_status=PaymentStatus.PENDING,  # not stored: the payment's status after the refund, at the time
        status=RefundStatus(row.status),
        out_refund_no=row.out_refund_no or "",
        channel_refund_no=row.channel_refund_no,
        failure_reason=row.failure_reason,
    )
    return StoredRefund(row.owner, record, row.checks, utc_or_none(row.next_check_at))


def by_id(connection: Connection, owner: str, refund_id: str) -> StoredRefund | None:
    if not owner:
        raise ValueError("owner-scoped access needs the caller's owner")
    row = connection.execute(_BY_ID, {"owner": owner, "refund_id": refund_id}).first()
    return None if row is None else _stored(row)


def for_provider(connection: Connection, out_refund_no: str) -> StoredRefund | None:
    """Unscoped: a provider's answer or notification names our refund number at the provider."""
    row = connection.execute(_FOR_PROVIDER, {"out_refund_no": out_refund_no}).first()
    return None if row is None else _stored(row)


def transition(
    connection: Connection,
    out_refund_no: str,
    new: RefundStatus,
    *,
    channel_refund_no: str,
    failure_reason: str,
    now: datetime,
) -> bool:
    """PENDING → `new`; False when it was not PENDING any more (another source settled it first). The change adds
    its event, with the refund as it now is."""
    result = connection.execute(
        _TRANSITION,
        {
            "target": out_refund_no,
            "expected": RefundStatus.PENDING.value,
            "new_status": new.value,
            "channel_refund_no": channel_refund_no,
            "failure_reason": failure_reason,
            "now": now,
        },
    )
    if result.rowcount != 1:
        return False
    emit.refund_moved(connection, partial(_as_committed, out_refund_no=out_refund_no), now)
    return True


def _as_committed(connection: Connection, *, out_refund_no: str) -> tuple[str, RefundRecord]:
    """The refund and its payment's status as its transaction leaves them (a refused refund restores what its
    payment can still refund after the refund's own update)."""
    row = connection.execute(_WITH_PAYMENT_STATUS, {"out_refund_no": out_refund_no}).one()
    stored = _stored(row)
    return stored.owner, replace(stored.record, payment_status=PaymentStatus(row.current_payment_status))


def schedule_check(connection: Connection, out_refund_no: str, next_check_at: datetime) -> None:
    connection.execute(_SCHEDULE, {"target": out_refund_no, "next_check_at": next_check_at})


def due_for_check(connection: Connection, now: datetime, limit: int) -> list[StoredRefund]:
    """Unscoped, for the janitor: pending provider refunds of every owner whose next check is due."""
    return [_stored(row) for row in connection.execute(_DUE, {"now": now, "limit": limit})]
