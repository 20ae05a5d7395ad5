"""One reconciliation of one channel and provider day, stored; and the operator's correction of one item
(docs/reconciliation.md).

A run never changes money: it reads the statement and our records and stores what differs. Money changes only
by `correct`, an operator's explicit command with a reason, which posts one balanced journal entry of kind
`correction` between the channel's CLEARING account and its SUSPENSE account — never an edit of a balance or
of the records — and names that entry on the item in the same transaction. The item's update is guarded
(`WHERE resolved_at IS NULL`), so a second correction of the same item, even a concurrent one, posts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from runtime import audit
from runtime.db import Database
from runtime.ids import new_id
from workers.channels.adapter import ProviderChannel
from workers.channels.base import NotificationKind
from workers.domain.types import AccountKind
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.reconciliation.fetch import fetch_statement, provider_day
from workers.reconciliation.match import match, reference
from workers.store import reconciliation as store
from workers.store.reconciliation import Run, StoredItem

CORRECTION = "correction"  # the journal entry kind
# The journal's owner of corrections: they belong to no calling service (and touch no wallet a caller could list).
RECONCILIATION_OWNER = "reconciliation"


class NotCorrectable(Exception):
    """The item does not exist, was corrected already, or has no difference to book."""


@dataclass(frozen=True)
class Correction:
    item_id: str
    entry_id: str
    channel: str
    currency: str
    clearing_minor: int  # the change of the channel's clearing account; suspense takes the opposite


def reconcile(database: Database, channel: ProviderChannel, day: date, clock: Callable[[], datetime]) -> Run:
    """Fetch the statement of `day` (the provider's day), match it with our records, store and return the run.
    Raises fetch.StatementUnavailable, with nothing stored, when the statement cannot be had."""
    started = clock()
    window = provider_day(channel.method, day)
    lines = fetch_statement(channel, day, clock)
    with database.read() as connection:
        ours = store.records_for(connection, channel.method, window, {reference(line) for line in lines})
    outcome = match(lines, ours, window)
    run_id = new_id("rcn")
    run = Run(
        run_id=run_id,
        channel=channel.method.value,
        day=day,
        started_at=started,
        finished_at=clock(),
        lines=outcome.lines,
        matched=outcome.matched,
        items=tuple(StoredItem(new_id("rci"), run_id, channel.method.value, day, item) for item in outcome.items),
    )
    with database.write() as connection:
        store.insert_run(connection, run)
    return run


def clearing_change(stored: StoredItem) -> int:
    """How the channel's clearing account must move so that it agrees with the provider. Clearing goes negative by
    what the provider holds for us: a payment settled there adds to that, a refund paid out of it takes away."""
    difference = stored.item.difference_minor
    return difference if stored.item.record is NotificationKind.REFUND else -difference


def correct(database: Database, item_id: str, reason: str, now: datetime, *, actor: str) -> Correction:
    """Book one item's difference as a correction entry; `actor` (runtime/audit.py) is kept in the audit trail, in
    the same transaction."""
    reason = reason.strip()
    if not reason:
        raise NotCorrectable("a correction needs a reason (--reason TEXT): it is kept with the item")
    with database.write() as connection:
        stored = store.item_by_id(connection, item_id)
        if stored is None:
            raise NotCorrectable(f"no reconciliation item {item_id!r}")
        if stored.resolved_at is not None:
            raise NotCorrectable(
                f"item {item_id} was corrected already at {stored.resolved_at.isoformat()} "
                f"(entry {stored.correction_entry_id or 'none'}); nothing was posted"
            )
        amount = clearing_change(stored)
        if amount == 0:
            raise NotCorrectable(f"item {item_id} ({stored.item.kind.value}) has no difference of money to book")
        currency = stored.item.currency
        clearing = accounts.ensure_account(connection, AccountKind.CLEARING, stored.channel, currency, now)
        suspense = accounts.ensure_account(connection, AccountKind.SUSPENSE, stored.channel, currency, now)
        entry = Entry(CORRECTION, RECONCILIATION_OWNER, None, item_id, currency, now)
        with move(connection, [BalanceChange(clearing, amount), BalanceChange(suspense, -amount)], entry) as entry_id:
            # Raising here rolls the entry back with the rest of the transaction.
            if not store.resolve(connection, item_id, entry_id, reason, now):
                raise NotCorrectable(f"item {item_id} was corrected by another command just now; nothing was posted")
        details: dict[str, audit.DetailValue] = {"entry_id": entry_id, "channel": stored.channel, "currency": currency}
        details |= {"kind": stored.item.kind.value, "clearing_minor": amount, "reason": audit.bounded_text(reason)}
        audit.record(connection, actor=actor, action="reconcile.correct", subject=item_id, details=details)
    return Correction(item_id, entry_id, stored.channel, currency, amount)
