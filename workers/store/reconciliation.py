"""Rows of reconciliation (docs/reconciliation.md): our settled records of a channel, and the runs and items.

Unscoped by design, like `ledger verify`: reconciliation is an operator's tool that compares a provider's
statement with every owner's records of that channel, and no caller's RPC reaches it. It only reads the owned
tables; what it writes is its own tables (and, for a correction, a journal entry through the ledger).

Functions take the caller's open transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, literal, select, update

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.schema import (
    NAME_LENGTH,
    payment_attempts,
    payments,
    reconciliation_items,
    reconciliation_runs,
    refunds,
)
from workers.channels.base import NotificationKind
from workers.domain.types import Method
from workers.events import emit
from workers.reconciliation.match import SETTLED, Item, ItemKind, Local, ProviderDay, Reference
from workers.store.moments import utc, utc_or_none

CHUNK = 500  # references per IN (...) list: far inside every database's limit on bound parameters
DETAIL_LENGTH = 256

_ATTEMPTS = select(
    payment_attempts.c.attempt_id,
    payment_attempts.c.amount_minor,
    payment_attempts.c.currency,
    payment_attempts.c.status,
    payment_attempts.c.updated_at,
).where(payment_attempts.c.method == bindparam("method"))
_SETTLED_ATTEMPTS = _ATTEMPTS.where(
    payment_attempts.c.status == SETTLED,
    payment_attempts.c.updated_at >= bindparam("start"),
    payment_attempts.c.updated_at < bindparam("end"),
)
_ATTEMPTS_BY_ID = _ATTEMPTS.where(payment_attempts.c.attempt_id.in_(bindparam("references", expanding=True)))
# A refund through a provider has our refund number; its channel is its payment's method.
_REFUNDS = (
    select(
        refunds.c.out_refund_no,
        payments.c.attempt_id,
        refunds.c.amount_minor,
        refunds.c.currency,
        refunds.c.status,
        refunds.c.updated_at,
        refunds.c.created_at,
    )
    .join(payments, payments.c.payment_id == refunds.c.payment_id)
    .where(payments.c.method == bindparam("method"), refunds.c.out_refund_no.is_not(None))
)
_SETTLED_REFUNDS = _REFUNDS.where(
    refunds.c.status == SETTLED,
    refunds.c.updated_at >= bindparam("start"),
    refunds.c.updated_at < bindparam("end"),
)
_REFUNDS_BY_NUMBER = _REFUNDS.where(refunds.c.out_refund_no.in_(bindparam("references", expanding=True)))
_ITEM = select(reconciliation_items, reconciliation_runs.c.channel, reconciliation_runs.c.day).join(
    reconciliation_runs, reconciliation_runs.c.run_id == reconciliation_items.c.run_id
)
_ITEM_BY_ID = _ITEM.where(reconciliation_items.c.item_id == bindparam("item_id"))
_ITEMS_OF_RUN = _ITEM.where(reconciliation_items.c.run_id == bindparam("run_id")).order_by(
    reconciliation_items.c.item_id
)
# Whose payment or refund a statement's reference is (an item's event goes to that owner).
_ATTEMPT_OWNER = select(payment_attempts.c.owner, payment_attempts.c.payment_id, literal("").label("refund_id")).where(
    payment_attempts.c.attempt_id == bindparam("reference")
)
_REFUND_OWNER = select(refunds.c.owner, refunds.c.payment_id, refunds.c.refund_id).where(
    refunds.c.out_refund_no == bindparam("reference")
)
_RUN_BY_ID = select(reconciliation_runs).where(reconciliation_runs.c.run_id == bindparam("run_id"))
# The guard against correcting an item twice: only an unresolved item takes a resolution.
_RESOLVE = (
    update(reconciliation_items)
    .where(reconciliation_items.c.item_id == bindparam("target_item_id"), reconciliation_items.c.resolved_at.is_(None))
    .values(
        resolved_at=bindparam("now"),
        correction_entry_id=bindparam("entry_id"),
        resolution=bindparam("resolution"),
    )
)


@dataclass(frozen=True)
class StoredItem:
    item_id: str
    run_id: str
    channel: str
    day: date
    item: Item
    resolved_at: datetime | None = None
    correction_entry_id: str | None = None
    resolution: str = ""


@dataclass(frozen=True)
class Run:
    run_id: str
    channel: str
    day: date
    started_at: datetime
    finished_at: datetime
    lines: int
    matched: int
    items: tuple[StoredItem, ...]

    @property
    def unmatched(self) -> int:
        return len(self.items)


def _payment(row: Any) -> Local:
    return Local(
        NotificationKind.PAYMENT,
        row.attempt_id,
        row.attempt_id,
        row.amount_minor,
        row.currency,
        row.status,
        utc(row.updated_at),
    )


def _refund(row: Any) -> Local:
    return Local(
        NotificationKind.REFUND,
        row.out_refund_no,
        row.attempt_id or "",
        row.amount_minor,
        row.currency,
        row.status,
        utc(row.updated_at or row.created_at),
    )


def records_for(connection: Connection, method: Method, day: ProviderDay, listed: Iterable[Reference]) -> list[Local]:
    """Our records the matcher needs: every payment attempt and refund of the channel settled within `day`, and
    every one (any status, any day) that the statement lists by reference."""
    window = {"method": method.value, "start": day.start.astimezone(UTC), "end": day.end.astimezone(UTC)}
    found = {r.key: r for r in map(_payment, connection.execute(_SETTLED_ATTEMPTS, window))}
    found |= {r.key: r for r in map(_refund, connection.execute(_SETTLED_REFUNDS, window))}
    wanted = {
        kind: sorted({ref for k, ref in listed if k is kind and (k, ref) not in found}) for kind in NotificationKind
    }
    for statement, build, kind in (
        (_ATTEMPTS_BY_ID, _payment, NotificationKind.PAYMENT),
        (_REFUNDS_BY_NUMBER, _refund, NotificationKind.REFUND),
    ):
        references = wanted[kind]
        for start in range(0, len(references), CHUNK):
            bound = {"method": method.value, "references": references[start : start + CHUNK]}
            found |= {r.key: r for r in map(build, connection.execute(statement, bound))}
    return list(found.values())


def insert_run(connection: Connection, run: Run) -> None:
    connection.execute(
        reconciliation_runs.insert(),
        {
            "run_id": run.run_id,
            "channel": run.channel,
            "day": run.day.isoformat(),
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "lines": run.lines,
            "matched": run.matched,
            "unmatched": run.unmatched,
        },
    )
    if run.items:
        connection.execute(reconciliation_items.insert(), [_item_values(stored) for stored in run.items])
    for stored in run.items:
        _announce(connection, stored, run.finished_at)


def _announce(connection: Connection, stored: StoredItem, now: datetime) -> None:
    """A difference about one of an owner's payments or refunds is that owner's event (docs/events.md); one
    about a reference we have no record of has no owner, and stays the operator's (the run's report)."""
    item = stored.item
    if item.record is NotificationKind.REFUND:
        row = connection.execute(_REFUND_OWNER, {"reference": item.out_refund_no}).first()
    else:
        row = connection.execute(_ATTEMPT_OWNER, {"reference": item.out_trade_no}).first()
    if row is None:
        return
    mismatch = pb.ReconciliationMismatch(
        item_id=stored.item_id,
        run_id=stored.run_id,
        channel=stored.channel,
        day=stored.day.isoformat(),
        kind=item.kind.value,
        payment_id=row.payment_id,
        refund_id=row.refund_id,
        local_amount_minor=item.ours_minor or 0,
        provider_amount_minor=item.theirs_minor or 0,
        currency=item.currency[:3],
        detail=item.detail[:DETAIL_LENGTH],
    )
    emit.mismatch_found(connection, row.owner, mismatch, now)


def _item_values(stored: StoredItem) -> dict[str, Any]:
    item = stored.item
    return {
        "item_id": stored.item_id,
        "run_id": stored.run_id,
        "kind": item.kind.value,
        "record": item.record.value,
        # A provider's statement may name anything; keep what fits (the detail says the rest).
        "out_trade_no": item.out_trade_no[:NAME_LENGTH],
        "out_refund_no": item.out_refund_no[:NAME_LENGTH],
        "currency": item.currency[:3],
        "ours_minor": item.ours_minor,
        "theirs_minor": item.theirs_minor,
        "detail": item.detail[:DETAIL_LENGTH],
        "resolved_at": None,
        "correction_entry_id": None,
        "resolution": "",
    }


def _stored(row: Any) -> StoredItem:
    item = Item(
        kind=ItemKind(row.kind),
        record=NotificationKind(row.record),
        out_trade_no=row.out_trade_no,
        out_refund_no=row.out_refund_no,
        currency=row.currency,
        ours_minor=row.ours_minor,
        theirs_minor=row.theirs_minor,
        detail=row.detail,
    )
    return StoredItem(
        item_id=row.item_id,
        run_id=row.run_id,
        channel=row.channel,
        day=date.fromisoformat(row.day),
        item=item,
        resolved_at=utc_or_none(row.resolved_at),
        correction_entry_id=row.correction_entry_id,
        resolution=row.resolution,
    )


def item_by_id(connection: Connection, item_id: str) -> StoredItem | None:
    row = connection.execute(_ITEM_BY_ID, {"item_id": item_id}).first()
    return None if row is None else _stored(row)


def run_by_id(connection: Connection, run_id: str) -> Run | None:
    row = connection.execute(_RUN_BY_ID, {"run_id": run_id}).first()
    if row is None:
        return None
    items = tuple(_stored(item) for item in connection.execute(_ITEMS_OF_RUN, {"run_id": run_id}))
    return Run(
        run_id=row.run_id,
        channel=row.channel,
        day=date.fromisoformat(row.day),
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
        lines=row.lines,
        matched=row.matched,
        items=items,
    )


def resolve(connection: Connection, item_id: str, entry_id: str | None, resolution: str, now: datetime) -> bool:
    """Record an item's resolution; False when it was resolved already (by an earlier or a concurrent call)."""
    result = connection.execute(
        _RESOLVE,
        {"target_item_id": item_id, "now": now, "entry_id": entry_id, "resolution": resolution[:DETAIL_LENGTH]},
    )
    return bool(result.rowcount == 1)
