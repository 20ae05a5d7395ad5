"""What each state change says (docs/events.md): a paygate.v1.Event, added to the change's own transaction.

The store functions that insert or move payments, refunds and transfers call these, so no operation can change
state without its event (runtime/outbox.py writes them just before the commit). An event carries the resource as
it is right after the change, encoded exactly as the RPCs answer it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection

from paygate.v1 import payment_gateway_pb2 as pb
from runtime import outbox
from runtime.ids import new_id
from workers.codec import encode
from workers.domain.types import PaymentRecord, PaymentStatus, RefundRecord, RefundStatus, TransferRecord

# The event a payment's or a refund's status announces; statuses not listed here announce nothing of their own
# (PENDING is announced by the CREATED event, a refund's effect on its payment by the refund's events).
PAYMENT_STATUS_EVENTS = {
    PaymentStatus.SUCCEEDED: pb.EVENT_TYPE_PAYMENT_SUCCEEDED,
    PaymentStatus.FAILED: pb.EVENT_TYPE_PAYMENT_FAILED,
    PaymentStatus.CLOSED: pb.EVENT_TYPE_PAYMENT_CLOSED,
    PaymentStatus.IN_REVIEW: pb.EVENT_TYPE_PAYMENT_IN_REVIEW,
}
REFUND_STATUS_EVENTS = {
    RefundStatus.SUCCEEDED: pb.EVENT_TYPE_REFUND_SUCCEEDED,
    RefundStatus.FAILED: pb.EVENT_TYPE_REFUND_FAILED,
}
EVENT_ID_PREFIX = "evt"
TYPE_NAMES = {number: pb.EventType.Name(number) for number in pb.EventType.values()}


def payment_created(connection: Connection, record: PaymentRecord) -> None:
    """PAYMENT_CREATED, and the event of its status if it was settled in the same transaction (a wallet
    purchase or a sandbox top-up is SUCCEEDED at once)."""
    data = _data(payment=encode.payment(record))
    _add(connection, record.owner, pb.EVENT_TYPE_PAYMENT_CREATED, record.created_at, data)
    settled = PAYMENT_STATUS_EVENTS.get(record.status)
    if settled is not None:
        _add(connection, record.owner, settled, record.updated_at, data)


def payment_moved(connection: Connection, record: PaymentRecord) -> None:
    """The event of the status a payment has just moved to (none for statuses that announce nothing)."""
    moved = PAYMENT_STATUS_EVENTS.get(record.status)
    if moved is not None:
        _add(connection, record.owner, moved, record.updated_at, _data(payment=encode.payment(record)))


def payment_released(connection: Connection, record: PaymentRecord) -> None:
    """An operator released a payment the risk engine held (docs/risk.md); `record` is the payment as released
    (a wallet purchase's SUCCEEDED event follows from its own transition)."""
    _add(
        connection,
        record.owner,
        pb.EVENT_TYPE_PAYMENT_RELEASED,
        record.updated_at,
        _data(payment=encode.payment(record)),
    )


def refund_created(connection: Connection, owner: str, record: RefundRecord) -> None:
    data = _data(refund=encode.refund(record))
    _add(connection, owner, pb.EVENT_TYPE_REFUND_CREATED, record.created_at, data)
    settled = REFUND_STATUS_EVENTS.get(record.status)
    if settled is not None:
        _add(connection, owner, settled, record.created_at, data)


def refund_moved(connection: Connection, read: Callable[[Connection], tuple[str, RefundRecord]], now: datetime) -> None:
    """The event of the status a refund has just moved to, with the refund (and its payment's status) as the
    transaction leaves them: `read` runs just before the commit and gives the owner and the refund."""

    def build(at_commit: Connection) -> outbox.NewEvent:
        owner, record = read(at_commit)
        moved = REFUND_STATUS_EVENTS.get(record.status)
        if moved is None:
            raise ValueError(f"a refund moved to {record.status}, which announces nothing")
        return _event(owner, moved, now, _data(refund=encode.refund(record)))

    outbox.add(connection, build)


def late_payment_refunded(connection: Connection, owner: str, record: RefundRecord) -> None:
    """Money for a payment already closed or failed went back to the payer by itself (the refund's own events
    follow from its insert)."""
    _add(connection, owner, pb.EVENT_TYPE_PAYMENT_LATE_REFUNDED, record.created_at, _data(refund=encode.refund(record)))


def transfer_made(connection: Connection, owner: str, record: TransferRecord) -> None:
    data = _data(transfer=encode.transfer(record))
    _add(connection, owner, pb.EVENT_TYPE_TRANSFER_SUCCEEDED, record.created_at, data)


def mismatch_found(connection: Connection, owner: str, mismatch: pb.ReconciliationMismatch, now: datetime) -> None:
    _add(connection, owner, pb.EVENT_TYPE_RECONCILIATION_MISMATCH, now, _data(mismatch=mismatch))


def _data(**resource: Any) -> bytes:
    """The event's `data` field, serialized once for every event of the change: a serialized message is the
    concatenation of its serialized fields, so an event is its head's bytes followed by these."""
    return pb.Event(**resource).SerializeToString()


def _add(connection: Connection, owner: str, kind: pb.EventType, at: datetime, data: bytes) -> None:
    outbox.add(connection, _event(owner, kind, at, data))


def _event(owner: str, kind: pb.EventType, at: datetime, data: bytes) -> outbox.NewEvent:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    event_id = new_id(EVENT_ID_PREFIX)
    head = pb.Event(event_id=event_id, type=kind, create_time=stamp).SerializeToString()
    return outbox.NewEvent(event_id, owner, TYPE_NAMES[kind], at, head + data)
