"""Moving money: a set of balance changes applied as one balanced journal entry (docs/ledger.md).

`move(...)` is a context manager used inside the operation's write transaction:

    with movement.move(connection, changes, entry) as entry_id:
        store.insert_payment(connection, ...entry_id...)   # the operation's own rows, naming the entry

It posts the entry, lets the operation write the rows that name it, and updates every balance — in the order
each database needs (see `updates_last`). A refused debit or a balance past its limit raises, and the whole
transaction rolls back: nothing of the operation is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from runtime.errors import BalanceLimitExceeded, InsufficientFunds
from runtime.ids import new_id
from workers.execution.locks import LockLease
from workers.ledger import accounts
from workers.ledger.accounts import Account


class StaleFence(Exception):
    """Our lock lease expired and a newer holder wrote the account; nothing of ours was committed."""

    def __init__(self, resource: str, database_fence: int) -> None:
        super().__init__(f"stale fence on {resource}")
        self.resource = resource
        self.database_fence = database_fence


@dataclass(frozen=True)
class BalanceChange:
    account: Account
    amount_minor: int
    lease: LockLease | None = None  # set for fenced debits of non-negative accounts


@dataclass(frozen=True)
class Entry:
    """What the journal entry says about itself."""

    kind: str  # top_up | purchase | refund | transfer | late_payment | ...
    owner: str
    payment_id: str | None
    reference_id: str  # the payment, refund or transfer id callers know it by
    currency: str
    now: datetime
    # The error for a refused fenced debit; the default names no account.
    on_insufficient: Callable[[], Exception] | None = None


def balance_limit_exceeded(account: Account, amount_minor: int) -> BalanceLimitExceeded:
    lowest, highest = account.kind.balance_range
    bound = f"its ceiling of {highest}" if amount_minor > 0 else f"its floor of {lowest}"
    return BalanceLimitExceeded(
        f"refused: this would take {account.kind.describe(account.subject)} past {bound} {account.currency} minor "
        "units (docs/api.md, Limits); nothing was moved"
    )


@contextmanager
def move(connection: Connection, changes: Sequence[BalanceChange], entry: Entry) -> Iterator[str]:
    """Post `changes` as one balanced entry; yields its id for the rows the operation writes inside the block."""
    moving = [change for change in changes if change.amount_minor != 0]
    # Every balance row is updated in one pass in account-id order, so two transactions can never hold one
    # account row each while waiting for the other's (a deadlock the database would break after a timeout).
    ordered = sorted(moving, key=lambda change: change.account.account_id)
    last = updates_last(connection)
    if not last:
        _update_balances(connection, ordered, entry)
    entry_id = new_id("je")
    accounts.post_entry(
        connection,
        entry_id=entry_id,
        kind=entry.kind,
        owner=entry.owner,
        payment_id=entry.payment_id,
        reference_id=entry.reference_id,
        entry_postings=[accounts.Posting(c.account.account_id, c.amount_minor, entry.currency) for c in moving],
        now=entry.now,
    )
    yield entry_id
    if last:
        _update_balances(connection, ordered, entry)


def updates_last(connection: Connection) -> bool:
    """Row locks last until commit, and hot accounts (platform revenue, a best-selling creator) are shared by
    every purchase, so the updates go as late as the database allows. On PostgreSQL that is after the inserts:
    the foreign-key check on postings takes FOR KEY SHARE, which does not block the UPDATE. On MySQL/MariaDB
    that check takes a shared lock that two transactions could then both try to upgrade, so there the updates
    come first; SQLite has one writer at a time, so the order does not matter."""
    return connection.dialect.name == "postgresql"


def _update_balances(connection: Connection, ordered: Sequence[BalanceChange], entry: Entry) -> None:
    for change in ordered:
        if change.lease is None:
            if not accounts.apply_unfenced(connection, change.account, change.amount_minor):
                raise balance_limit_exceeded(change.account, change.amount_minor)
            continue
        outcome = accounts.debit_fenced(connection, change.account.account_id, -change.amount_minor, change.lease.fence)
        if outcome is accounts.DebitOutcome.STALE_FENCE:
            current = accounts.find_account(
                connection, change.account.kind, change.account.subject, change.account.currency
            )
            raise StaleFence(change.lease.resource, current.fence if current else change.lease.fence)
        if outcome is accounts.DebitOutcome.INSUFFICIENT_FUNDS:
            raise entry.on_insufficient() if entry.on_insufficient else InsufficientFunds("insufficient funds")
