"""Rows of payments, refunds and transfers — every lookup scoped by owner (docs/architecture.md, "Owners").

A payment, refund or transfer belongs to the owner (the API key's name) that created it, and another owner must
see it exactly as if it did not exist. This module is the only code that reads or writes those tables (a test
enforces it), and every statement it offers for a caller takes the owner and puts it in the WHERE clause, so a
handler cannot forget the scope: there is no unscoped lookup to call by mistake.

Two lookups are deliberately not scoped, and their names say why: a payment channel's confirmation addresses a
payment by our id alone (`payment_for_channel_notification`), and the expiry sweeper closes PENDING payments of
every owner (`expired_pending_payments`). Neither is reachable from a caller's RPC.

Functions take the caller's open transaction and never commit: the service owns the transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Row, bindparam, or_, select, update

from runtime.schema import accounts, journal_entries, payment_attempts, payments, postings, refunds, transfers
from workers.domain.types import (
    AccountKind,
    PaymentRecord,
    PaymentStatus,
    RefundRecord,
    TransactionRecord,
    TransferRecord,
)
from workers.events import emit
from workers.store.moments import utc

# Built once, bound per call (see workers/ledger/accounts.py for why).
# A payment with what its current attempt handed back for the payer (NULL for wallet payments: no attempt).
_PAYMENT = select(
    payments,
    payment_attempts.c.scene,
    payment_attempts.c.pay_url,
    payment_attempts.c.qr_code,
    payment_attempts.c.prepay_id,
    payment_attempts.c.trade_no.label("channel_trade_no"),
    payment_attempts.c.card_masked,
).select_from(payments.outerjoin(payment_attempts, payment_attempts.c.attempt_id == payments.c.attempt_id))
_PAYMENT_BY_ID = _PAYMENT.where(
    payments.c.owner == bindparam("owner"), payments.c.payment_id == bindparam("payment_id")
)
_PAYMENT_BY_ORDER = _PAYMENT.where(payments.c.owner == bindparam("owner"), payments.c.order_id == bindparam("order_id"))
_PAYMENT_FOR_CHANNEL = _PAYMENT.where(payments.c.payment_id == bindparam("payment_id"))
_INSERT_PAYMENT = payments.insert()
_INSERT_REFUND = refunds.insert()
_INSERT_TRANSFER = transfers.insert()
# A status change guarded by the status it was read in (transitions are guarded updates, docs/ledger.md).
_TRANSITION = (
    update(payments)
    .where(
        payments.c.owner == bindparam("target_owner"),
        payments.c.payment_id == bindparam("target_payment_id"),
        payments.c.status == bindparam("expected_status"),
    )
    .values(
        status=bindparam("new_status"),
        entry_id=bindparam("entry_id"),
        failure_reason=bindparam("failure_reason"),
        refunded_minor=bindparam("refunded_minor"),
        updated_at=bindparam("now"),
    )
)
# The guarded transition of a refund: only from the status and refunded total this attempt read.
_RECORD_REFUND = (
    update(payments)
    .where(
        payments.c.owner == bindparam("target_owner"),
        payments.c.payment_id == bindparam("target_payment_id"),
        payments.c.status == bindparam("expected_status"),
        payments.c.refunded_minor == bindparam("expected_refunded"),
    )
    .values(status=bindparam("new_status"), refunded_minor=bindparam("new_refunded"), updated_at=bindparam("now"))
)
# The oldest first, straight from the (status, created_at) index (migration 0008): no scan of every payment.
# A payment's time to be paid runs from its current attempt (a payment released after a risk review gets its first
# attempt then, docs/risk.md), so a payment is expired only when its attempt is old too. The payment's own
# created_at (never later than its attempt's) keeps the (status, created_at) index in use; the join drops the
# released ones inside the query, so they neither fill a round's LIMIT nor starve the payments really expired.
_EXPIRED = (
    select(payments.c.owner, payments.c.payment_id)
    .select_from(payments.outerjoin(payment_attempts, payment_attempts.c.attempt_id == payments.c.attempt_id))
    .where(
        payments.c.status == PaymentStatus.PENDING.value,
        payments.c.created_at < bindparam("cutoff"),
        or_(payment_attempts.c.attempt_id.is_(None), payment_attempts.c.created_at < bindparam("cutoff")),
    )
    .order_by(payments.c.created_at)
    .limit(bindparam("limit"))
)
_IN_REVIEW = (
    _PAYMENT.where(payments.c.status == PaymentStatus.IN_REVIEW.value)
    .order_by(payments.c.created_at)
    .limit(bindparam("limit"))
)
# A wallet is the learner's, shared by every calling service; the entries on it belong to the services that made
# them, so a caller's history lists only the entries of its own owner. The user's wallets (one a currency) come
# first, by the unique (kind, subject, currency) index; then each wallet's page is a backward walk of the
# postings' (account_id, posting_id) index that stops after `limit` rows of the owner. Joining accounts in the
# same statement instead made the database read, join and sort every older posting of the user before its LIMIT:
# a page cost as much as the user's history (docs/benchmarks.md).
_WALLET_ACCOUNTS = select(accounts.c.account_id).where(
    accounts.c.kind == AccountKind.WALLET.value, accounts.c.subject == bindparam("user_id")
)
_WALLET_POSTINGS = (
    select(
        postings.c.posting_id,
        postings.c.entry_id,
        postings.c.amount_minor,
        postings.c.currency,
        postings.c.created_at,
        journal_entries.c.kind,
        journal_entries.c.reference_id,
    )
    .join(journal_entries, journal_entries.c.entry_id == postings.c.entry_id)
    .where(
        postings.c.account_id == bindparam("account_id"),
        journal_entries.c.owner == bindparam("owner"),
        postings.c.posting_id < bindparam("before_posting_id"),
    )
    .order_by(postings.c.posting_id.desc())
    .limit(bindparam("limit"))
)


REFUND_FIRST_CHECK = timedelta(seconds=30)


class UnscopedAccess(Exception):
    """A bug: an owner-scoped statement was called without an owner."""


def _owner(owner: str) -> str:
    if not owner:
        raise UnscopedAccess("owner-scoped access needs the caller's owner")
    return owner


# -- payments ------------------------------------------------------------------------------------------------


def payment_by_id(connection: Connection, owner: str, payment_id: str) -> PaymentRecord | None:
    row = connection.execute(_PAYMENT_BY_ID, {"owner": _owner(owner), "payment_id": payment_id}).first()
    return None if row is None else payment_record(row)


def payment_by_order(connection: Connection, owner: str, order_id: str) -> PaymentRecord | None:
    row = connection.execute(_PAYMENT_BY_ORDER, {"owner": _owner(owner), "order_id": order_id}).first()
    return None if row is None else payment_record(row)


def payment_for_channel_notification(connection: Connection, payment_id: str) -> PaymentRecord | None:
    """Unscoped, for channel confirmations only: a channel knows our payment id, not the calling service."""
    row = connection.execute(_PAYMENT_FOR_CHANNEL, {"payment_id": payment_id}).first()
    return None if row is None else payment_record(row)


def expired_pending_payments(connection: Connection, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
    """Unscoped, for the expiry sweeper: (owner, payment_id) of PENDING payments whose current attempt (or the
    payment itself, when it has none) was created before `cutoff`, oldest payment first."""
    return [(row.owner, row.payment_id) for row in connection.execute(_EXPIRED, {"cutoff": cutoff, "limit": limit})]


def payments_in_review_for_operator(connection: Connection, limit: int) -> list[PaymentRecord]:
    """Unscoped, for `paygate risk review list` only (an operator's tool, reachable from no RPC): the payments the
    risk engine holds, oldest first, from the (status, created_at) index."""
    rows = connection.execute(_IN_REVIEW, {"limit": limit})
    return [payment_record(row) for row in rows]


def payment_for_operator(connection: Connection, payment_id: str) -> PaymentRecord | None:
    """Unscoped, for operator tools only (`paygate risk review release|refuse`): a payment by our id alone."""
    row = connection.execute(_PAYMENT_FOR_CHANNEL, {"payment_id": payment_id}).first()
    return None if row is None else payment_record(row)


def insert_payment(connection: Connection, record: PaymentRecord) -> None:
    connection.execute(_INSERT_PAYMENT, _payment_values(record))
    emit.payment_created(connection, record)


def insert_payments(connection: Connection, batch: list[PaymentRecord]) -> None:
    """Many payments in one statement (group commit)."""
    connection.execute(_INSERT_PAYMENT, [_payment_values(record) for record in batch])
    for record in batch:
        emit.payment_created(connection, record)


def _payment_values(record: PaymentRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: getattr(record, name)
        for name in (
            "payment_id",
            "owner",
            "order_id",
            "user_id",
            "payee_id",
            "amount_minor",
            "currency",
            "refunded_minor",
            "failure_reason",
            "description",
            "entry_id",
            "created_at",
            "updated_at",
            "list_price_minor",
            "discount_minor",
            "tax_minor",
            "creator_amount_minor",
            "platform_fee_minor",
            "risk_decision",
            "risk_score",
            "risk_reasons",
        )
    }
    values["owner"] = _owner(record.owner)
    values.update(payment_type=record.payment_type.value, method=record.method.value, status=record.status.value)
    return values


def transition_payment(
    connection: Connection,
    owner: str,
    payment_id: str,
    *,
    expected: PaymentStatus,
    new: PaymentStatus,
    entry_id: str | None,
    failure_reason: str,
    refunded_minor: int,
    now: datetime,
) -> bool:
    """Move a payment from `expected` to `new`; False when it was not in `expected` any more. A change of status
    adds its event, with the payment as it now is."""
    result = connection.execute(
        _TRANSITION,
        {
            "target_owner": _owner(owner),
            "target_payment_id": payment_id,
            "expected_status": expected.value,
            "new_status": new.value,
            "entry_id": entry_id,
            "failure_reason": failure_reason,
            "refunded_minor": refunded_minor,
            "now": now,
        },
    )
    if result.rowcount != 1:
        return False
    if new is not expected and new in emit.PAYMENT_STATUS_EVENTS:
        moved = payment_by_id(connection, owner, payment_id)
        if moved is None:
            raise LookupError(f"payment {payment_id} vanished inside the transaction that moved it")
        emit.payment_moved(connection, moved)
    return True


def record_refund_on_payment(
    connection: Connection,
    payment: PaymentRecord,
    *,
    new_status: PaymentStatus,
    new_refunded_minor: int,
    now: datetime,
) -> bool:
    """Apply a refund's status and total to the payment as read; False when another refund changed it first."""
    result = connection.execute(
        _RECORD_REFUND,
        {
            "target_owner": _owner(payment.owner),
            "target_payment_id": payment.payment_id,
            "expected_status": payment.status.value,
            "expected_refunded": payment.refunded_minor,
            "new_status": new_status.value,
            "new_refunded": new_refunded_minor,
            "now": now,
        },
    )
    return bool(result.rowcount == 1)


def payment_record(row: Row[Any]) -> PaymentRecord:
    return PaymentRecord.from_row(row)


# -- refunds and transfers -------------------------------------------------------------------------------------


def insert_refund(connection: Connection, owner: str, record: RefundRecord) -> None:
    connection.execute(
        _INSERT_REFUND,
        {
            "owner": _owner(owner),
            "refund_id": record.refund_id,
            "payment_id": record.payment_id,
            "amount_minor": record.amount_minor,
            "currency": record.currency,
            "creator_amount_minor": record.creator_amount_minor,
            "platform_fee_minor": record.platform_fee_minor,
            "reason": record.reason,
            "entry_id": record.entry_id,
            "created_at": record.created_at,
            "status": record.status.value,
            "out_refund_no": record.out_refund_no or None,
            "channel_refund_no": record.channel_refund_no,
            "failure_reason": record.failure_reason,
            "updated_at": record.created_at,
            # A refund through a provider is next asked about by the janitor, unless the provider answers first.
            "next_check_at": record.created_at + REFUND_FIRST_CHECK if record.out_refund_no else None,
            "checks": 0,
        },
    )
    emit.refund_created(connection, owner, record)


def insert_transfer(connection: Connection, owner: str, record: TransferRecord) -> None:
    connection.execute(
        _INSERT_TRANSFER,
        {
            "owner": _owner(owner),
            "transfer_id": record.transfer_id,
            "from_user_id": record.from_user_id,
            "to_user_id": record.to_user_id,
            "amount_minor": record.amount_minor,
            "currency": record.currency,
            "entry_id": record.entry_id,
            "created_at": record.created_at,
        },
    )
    emit.transfer_made(connection, owner, record)


# -- history ---------------------------------------------------------------------------------------------------


def wallet_postings(
    connection: Connection, owner: str, user_id: str, *, before_posting_id: int, limit: int
) -> list[TransactionRecord]:
    """The owner's postings to `user_id`'s wallets, newest first, strictly older than `before_posting_id`."""
    values = {"owner": _owner(owner), "before_posting_id": before_posting_id, "limit": limit}
    wallets = connection.execute(_WALLET_ACCOUNTS, {"user_id": user_id}).scalars().all()
    pages = [connection.execute(_WALLET_POSTINGS, {**values, "account_id": wallet}).all() for wallet in wallets]
    # Each page is newest first and posting ids are unique: the newest `limit` of all of them, in order.
    rows = pages[0] if len(pages) == 1 else sorted(chain(*pages), key=lambda row: row.posting_id, reverse=True)
    return [
        TransactionRecord(
            posting_id=row.posting_id,
            entry_id=row.entry_id,
            amount_minor=row.amount_minor,
            currency=row.currency,
            kind=row.kind,
            reference_id=row.reference_id or "",
            created_at=utc(row.created_at),
        )
        for row in rows[:limit]
    ]
