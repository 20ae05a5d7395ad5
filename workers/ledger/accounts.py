"""The double-entry ledger: accounts, fenced debits, atomic credits and balanced journal entries.

Repository functions take the caller's open transaction and never commit (docs/ledger.md, "One operation, one
transaction"): the operation owns the transaction, so postings, balance updates, the payment row and the
idempotency record commit together.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from runtime.point_reads import CompiledRead, PointReader
from runtime.schema import accounts, journal_entries, postings
from workers.domain.types import AccountKind

# Statements are built once and bound per call: building a SQLAlchemy statement costs more than running it on
# SQLite (about 130 µs against 35 µs, docs/benchmarks.md), and these run several times per payment.
_ACCOUNT_COLUMNS = (
    accounts.c.account_id,
    accounts.c.kind,
    accounts.c.subject,
    accounts.c.currency,
    accounts.c.balance_minor,
    accounts.c.fence,
)
_FIND_ACCOUNT = select(*_ACCOUNT_COLUMNS).where(
    accounts.c.kind == bindparam("kind"),
    accounts.c.subject == bindparam("subject"),
    accounts.c.currency == bindparam("currency"),
)
_FIND_ACCOUNT_ON_SQLITE = CompiledRead.of(_FIND_ACCOUNT)
_FENCED_DEBIT = (
    update(accounts)
    .where(
        accounts.c.account_id == bindparam("target_id"),
        accounts.c.fence < bindparam("new_fence"),
        accounts.c.balance_minor >= bindparam("amount"),
    )
    .values(balance_minor=accounts.c.balance_minor - bindparam("amount"), fence=bindparam("new_fence"))
)
# An atomic increment that keeps the balance inside its kind's range (workers/domain/limits.py): the bounds on the *old*
# balance are computed in Python (lowest - amount, highest - amount), so the database never evaluates a sum that
# could leave int64 (SQLite would silently turn it into a floating-point REAL) and a refused update matches no row.
_INCREMENT = (
    update(accounts)
    .where(
        accounts.c.account_id == bindparam("target_id"),
        accounts.c.balance_minor >= bindparam("lowest_before"),
        accounts.c.balance_minor <= bindparam("highest_before"),
    )
    .values(balance_minor=accounts.c.balance_minor + bindparam("amount"))
)
# Several (kind, subject) pairs at once: both IN lists stay on the unique index's prefix (kind, subject).
_FIND_ACCOUNTS = select(*_ACCOUNT_COLUMNS).where(
    accounts.c.kind.in_(bindparam("kinds", expanding=True)),
    accounts.c.subject.in_(bindparam("subjects", expanding=True)),
)
# Group commit's one statement for every balance change of a batch, run once per account (executemany; psycopg
# pipelines it into one round trip): an increment kept inside the account's range (see _INCREMENT), and — when
# new_fence > 0 — a fenced debit, which also requires `fence < :new_fence` and records the new fence (see
# _FENCED_DEBIT: for a wallet, lowest_before = the amount, so the balance cannot go below zero).
_BATCH_CHANGE = (
    update(accounts)
    .where(
        accounts.c.account_id == bindparam("target_id"),
        or_(bindparam("new_fence") == 0, accounts.c.fence < bindparam("new_fence")),
        accounts.c.balance_minor >= bindparam("lowest_before"),
        accounts.c.balance_minor <= bindparam("highest_before"),
    )
    .values(
        balance_minor=accounts.c.balance_minor + bindparam("amount"),
        fence=case((bindparam("new_fence") > 0, bindparam("new_fence")), else_=accounts.c.fence),
    )
)
_FENCE_OF = select(accounts.c.fence).where(accounts.c.account_id == bindparam("target_id"))
_INSERT_ENTRY = journal_entries.insert()
_INSERT_POSTING = postings.insert()
_INSERT_ACCOUNT = {
    "postgresql": postgresql.insert(accounts).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(accounts).on_conflict_do_nothing(),
    "mysql": insert(accounts).prefix_with("IGNORE"),  # MySQL and MariaDB
}


class LedgerInvariantError(Exception):
    """A bug, never a caller's fault: an entry that does not balance would have been written."""


@dataclass(frozen=True)
class Account:
    account_id: int
    kind: AccountKind
    subject: str
    currency: str
    balance_minor: int
    fence: int


@dataclass(frozen=True)
class Posting:
    account_id: int
    amount_minor: int
    currency: str


class DebitOutcome(enum.Enum):
    APPLIED = "applied"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    STALE_FENCE = "stale_fence"  # a newer lock holder has written: our lease is gone


def find_account(connection: Connection, kind: AccountKind, subject: str, currency: str) -> Account | None:
    row = connection.execute(_FIND_ACCOUNT, {"kind": kind.value, "subject": subject, "currency": currency}).first()
    return None if row is None else _account(row)


_FIRST_WALLET = select(func.min(accounts.c.created_at)).where(
    accounts.c.kind == AccountKind.WALLET.value, accounts.c.subject == bindparam("user_id")
)


def first_wallet_created_at(connection: Connection, user_id: str) -> datetime | None:
    """When the user's first wallet (any currency) was opened: the account age new-account risk rules weigh."""
    value = connection.execute(_FIRST_WALLET, {"user_id": user_id}).scalar()
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def point_read_account(reader: PointReader, kind: AccountKind, subject: str, currency: str) -> Account | None:
    """find_account on a raw SQLite connection (runtime/point_reads.py): the same statement, about 15 times cheaper."""
    row = reader.first(_FIND_ACCOUNT_ON_SQLITE, {"kind": kind.value, "subject": subject, "currency": currency})
    return None if row is None else _account(row)


def _account(row: Sequence[Any]) -> Account:
    """An account from a row of _ACCOUNT_COLUMNS, in their order (an engine row or a raw sqlite3 tuple)."""
    account_id, kind, subject, currency, balance_minor, fence = row
    return Account(account_id, AccountKind(kind), subject, currency, balance_minor, fence)


def find_accounts(
    connection: Connection, wanted: set[tuple[AccountKind, str]]
) -> dict[tuple[AccountKind, str, str], Account]:
    """The accounts of these (kind, subject) pairs, in every currency, by (kind, subject, currency): one query
    (group commit reads a batch's wallets, creators and platform revenue together)."""
    if not wanted:
        return {}
    params = {
        "kinds": sorted({kind.value for kind, _ in wanted}),
        "subjects": sorted({subject for _, subject in wanted}),
    }
    found = (_account(row) for row in connection.execute(_FIND_ACCOUNTS, params))
    # The two IN lists also match pairs nobody asked for.
    return {(a.kind, a.subject, a.currency): a for a in found if (a.kind, a.subject) in wanted}


def ensure_account(connection: Connection, kind: AccountKind, subject: str, currency: str, now: datetime) -> Account:
    """The account, created with a zero balance if it does not exist yet (safe under concurrent creators)."""
    existing = find_account(connection, kind, subject, currency)
    if existing is not None:
        return existing
    values = {
        "kind": kind.value,
        "subject": subject,
        "currency": currency,
        "balance_minor": 0,
        "fence": 0,
        "non_negative": kind.non_negative,
        "created_at": now,
    }
    connection.execute(_INSERT_ACCOUNT[connection.dialect.name], values)
    created = find_account(connection, kind, subject, currency)
    if created is None:
        raise LedgerInvariantError(f"account {kind}:{subject}:{currency} vanished after insert")
    return created


def debit_fenced(connection: Connection, account_id: int, amount_minor: int, fence: int) -> DebitOutcome:
    """Take `amount_minor` from a non-negative account, only as the current lock holder and only if covered."""
    result = connection.execute(_FENCED_DEBIT, {"target_id": account_id, "new_fence": fence, "amount": amount_minor})
    if result.rowcount == 1:
        return DebitOutcome.APPLIED
    current_fence = connection.execute(_FENCE_OF, {"target_id": account_id}).scalar_one()
    return DebitOutcome.STALE_FENCE if current_fence >= fence else DebitOutcome.INSUFFICIENT_FUNDS


def apply_changes(connection: Connection, changes: Sequence[tuple[Account, int, int]]) -> bool:
    """A batch's balance changes — (account, amount, fence: 0 for an unfenced increment) — in the order given
    (callers sort by account id), as one executemany of one statement; True when every one applied. A False means
    at least one matched no row (a newer lock holder, an uncovered debit, a balance past its range): the caller
    rolls the whole transaction back, as it cannot tell which."""
    if not changes:
        return True
    params = [{**_range_params(account, amount_minor), "new_fence": fence} for account, amount_minor, fence in changes]
    if not connection.dialect.supports_sane_multi_rowcount:
        return all(connection.execute(_BATCH_CHANGE, one).rowcount == 1 for one in params)
    return connection.execute(_BATCH_CHANGE, params).rowcount == len(params)


def _range_params(account: Account, amount_minor: int) -> dict[str, int]:
    """An increment's parameters, its range bounds on the *old* balance computed in Python (see _INCREMENT)."""
    lowest, highest = account.kind.balance_range
    return {
        "target_id": account.account_id,
        "amount": amount_minor,
        "lowest_before": lowest - amount_minor,
        "highest_before": highest - amount_minor,
    }


def apply_unfenced(connection: Connection, account: Account, amount_minor: int) -> bool:
    """An atomic increment: credits to any account, and debits of accounts allowed to go negative.

    These need no lock (a credit cannot overdraw), which is what keeps hot accounts like platform revenue fast.
    False, with nothing changed, when the new balance would leave the account's range (its balance ceiling, or
    the floor of an account that may go negative); the caller refuses the whole operation.
    """
    result = connection.execute(_INCREMENT, _range_params(account, amount_minor))
    if result.rowcount == 1:
        return True
    if connection.execute(_FENCE_OF, {"target_id": account.account_id}).first() is None:
        raise LedgerInvariantError(f"account {account.account_id} does not exist")
    return False


@dataclass(frozen=True)
class NewEntry:
    """One journal entry to write (`post_entry`, `post_entries`)."""

    entry_id: str
    kind: str
    owner: str
    payment_id: str | None
    reference_id: str | None
    postings: Sequence[Posting]
    now: datetime


def post_entry(
    connection: Connection,
    *,
    entry_id: str,
    kind: str,
    owner: str,
    payment_id: str | None,
    entry_postings: Sequence[Posting],
    now: datetime,
    reference_id: str | None = None,
) -> None:
    """Write one journal entry; refuses (as a bug) any entry whose postings do not sum to zero per currency."""
    post_entries(connection, [NewEntry(entry_id, kind, owner, payment_id, reference_id, entry_postings, now)])


def post_entries(connection: Connection, entries: Sequence[NewEntry]) -> None:
    """Write journal entries with one statement for the entries and one for their postings (group commit writes
    a whole batch); every entry is checked to balance first, so nothing is written if one does not (a bug)."""
    for entry in entries:
        check_balanced(entry.postings)
    connection.execute(
        _INSERT_ENTRY,
        [
            {
                "entry_id": e.entry_id,
                "kind": e.kind,
                "payment_id": e.payment_id,
                "owner": e.owner,
                "created_at": e.now,
                "reference_id": e.reference_id,
            }
            for e in entries
        ],
    )
    connection.execute(
        _INSERT_POSTING,
        [
            {
                "entry_id": e.entry_id,
                "account_id": p.account_id,
                "amount_minor": p.amount_minor,
                "currency": p.currency,
                "created_at": e.now,
            }
            for e in entries
            for p in e.postings
        ],
    )


def check_balanced(entry_postings: Sequence[Posting]) -> None:
    if len(entry_postings) < 2:
        raise LedgerInvariantError("a journal entry needs at least two postings")
    totals: dict[str, int] = defaultdict(int)
    for posting in entry_postings:
        if posting.amount_minor == 0:
            raise LedgerInvariantError("a posting of zero moves nothing")
        totals[posting.currency] += posting.amount_minor
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise LedgerInvariantError(f"journal entry does not balance: {unbalanced}")


def postings_sum(connection: Connection, account_id: int) -> int:
    total = connection.execute(
        select(func.coalesce(func.sum(postings.c.amount_minor), 0)).where(postings.c.account_id == account_id)
    ).scalar_one()
    return int(total)
