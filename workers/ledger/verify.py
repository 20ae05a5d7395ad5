"""`paygate ledger verify`: prove the ledger's invariants from the database alone (docs/ledger.md).

Every check is one aggregate query run by the database, reporting at most MAX_EXAMPLES offenders each:

1. every journal entry has at least two postings and sums to zero per currency;
2. every posting is in its account's currency;
3. every account's balance equals the sum of its postings;
4. every balance is inside its kind's range: wallets and creator payables in [0, 10^17], the platform's revenue
   and clearing accounts in [-4 x 10^18, 4 x 10^18] (workers/domain/limits.py);
5. every SUCCEEDED / PARTIALLY_REFUNDED / REFUNDED payment has exactly one entry of its own kind, moving exactly
   its amount, and no other payment has one;
6. every payment's refunded total equals the sum of its refunds, each refund has its entry, and the status
   matches the refunded total;
7. every transfer has its entry;
8. a CLOSED payment moved no money, unless it was confirmed late, in which case it has exactly one late_payment
   entry and was refunded in full;
9. each channel's IN_TRANSIT account equals the sum of its PENDING refunds (workers/ledger/verify_channels.py).

No sum can overflow. PostgreSQL and MySQL add BIGINTs into NUMERIC/DECIMAL. SQLite's sum() stops with "integer
overflow" past int64, so the one unbounded sum, an account's postings (any number of them), is split there into
the sums of the high and the low 32 bits of each amount, each far inside int64, and joined in Python. The other
sums are bounded by the CHECK constraints on amounts; should the database have been altered so that one still
overflows, the check reports a breach instead of crashing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, case, func, literal, or_, select
from sqlalchemy.exc import OperationalError

from runtime.db import Database
from runtime.schema import accounts, journal_entries, payments, postings, refunds, transfers
from workers.domain.limits import MAX_SYSTEM_BALANCE_MINOR, MAX_USER_BALANCE_MINOR
from workers.ledger.verify_channels import in_transit_matches_pending_refunds

MAX_EXAMPLES = 20
MONEY_MOVED = ("succeeded", "partially_refunded", "refunded")


@dataclass
class Check:
    name: str
    offenders: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.offenders


@dataclass
class Report:
    checks: list[Check]
    entries: int
    postings: int
    accounts: int
    payments: int

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def render(self) -> str:
        lines = [
            f"ledger verify: {self.entries} entries, {self.postings} postings, {self.accounts} accounts, "
            f"{self.payments} payments"
        ]
        for check in self.checks:
            lines.append(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}")
            lines.extend(f"       {offender}" for offender in check.offenders)
            if len(check.offenders) >= MAX_EXAMPLES:
                lines.append(f"       (first {MAX_EXAMPLES} shown)")
        lines.append("ledger verify: OK" if self.ok else "ledger verify: BREACHED")
        return "\n".join(lines)


def verify(database: Database) -> Report:
    with _snapshot(database) as connection:
        checks = [
            _run("every entry balances per currency", _unbalanced_entries, connection),
            _run("every posting is in its account's currency", _foreign_currency_postings, connection),
            _run("every balance equals the sum of its postings", _drifted_balances, connection),
            _run(
                "every balance is inside its range (no wallet or payable below 0)", _accounts_out_of_range, connection
            ),
            _run("every settled payment has exactly its own entry", _payment_entries, connection),
            _run("refunds match their payments", _refund_totals, connection),
            _run("every transfer has its entry", _transfer_entries, connection),
            _run("closed payments moved nothing, or were refunded in full", _closed_payments, connection),
            _run(
                "refunds in transit equal the pending channel refunds", in_transit_matches_pending_refunds, connection
            ),
        ]
        counts = [
            connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (journal_entries, postings, accounts, payments)
        ]
    return Report(checks, *counts)


def _run(name: str, check: Callable[[Connection], list[str]], connection: Connection) -> Check:
    try:
        return Check(name, check(connection))
    except OperationalError as error:
        if "overflow" not in str(error.orig):
            raise
        # Only possible if rows were altered outside Paygate: within the limits no checked sum leaves int64.
        return Check(name, ["a sum overflows int64: amounts beyond the documented limits were written directly"])


@contextmanager
def _snapshot(database: Database) -> Iterator[Connection]:
    """All checks read one consistent snapshot, so a verify that runs beside live traffic reports no phantoms."""
    with database.reader.connect() as connection:
        if database.dialect == "sqlite":
            connection.exec_driver_sql("BEGIN")  # a deferred read transaction: one WAL snapshot
            try:
                yield connection
            finally:
                connection.exec_driver_sql("ROLLBACK")
        else:
            with connection.execution_options(isolation_level="REPEATABLE READ").begin():
                yield connection


def _unbalanced_entries(connection: Connection) -> list[str]:
    per_currency = (
        select(postings.c.entry_id, postings.c.currency, func.sum(postings.c.amount_minor).label("total"))
        .group_by(postings.c.entry_id, postings.c.currency)
        .having(func.sum(postings.c.amount_minor) != 0)
        .limit(MAX_EXAMPLES)
    )
    offenders = [
        f"entry {r.entry_id}: {r.currency} postings sum to {r.total}" for r in connection.execute(per_currency)
    ]
    counted = (
        select(journal_entries.c.entry_id, func.count(postings.c.posting_id).label("n"))
        .select_from(journal_entries.outerjoin(postings, postings.c.entry_id == journal_entries.c.entry_id))
        .group_by(journal_entries.c.entry_id)
        .having(func.count(postings.c.posting_id) < 2)
        .limit(MAX_EXAMPLES)
    )
    offenders += [f"entry {r.entry_id}: {r.n} posting(s)" for r in connection.execute(counted)]
    return offenders[:MAX_EXAMPLES]


def _foreign_currency_postings(connection: Connection) -> list[str]:
    query = (
        select(postings.c.posting_id, postings.c.currency, accounts.c.currency.label("account_currency"))
        .join(accounts, accounts.c.account_id == postings.c.account_id)
        .where(postings.c.currency != accounts.c.currency)
        .limit(MAX_EXAMPLES)
    )
    return [
        f"posting {r.posting_id}: {r.currency} on a {r.account_currency} account" for r in connection.execute(query)
    ]


def _drifted_balances(connection: Connection) -> list[str]:
    if connection.dialect.name == "sqlite":
        return _drifted_balances_split(connection)
    sums = (
        select(postings.c.account_id, func.sum(postings.c.amount_minor).label("total"))
        .group_by(postings.c.account_id)
        .subquery()
    )
    query = (
        select(
            accounts.c.account_id,
            accounts.c.kind,
            accounts.c.subject,
            accounts.c.currency,
            accounts.c.balance_minor,
            func.coalesce(sums.c.total, 0).label("total"),
        )
        .select_from(accounts.outerjoin(sums, sums.c.account_id == accounts.c.account_id))
        .where(accounts.c.balance_minor != func.coalesce(sums.c.total, 0))
        .limit(MAX_EXAMPLES)
    )
    return [
        f"account {r.kind}:{r.subject}:{r.currency}: balance {r.balance_minor}, postings sum to {r.total}"
        for r in connection.execute(query)
    ]


def _drifted_balances_split(connection: Connection) -> list[str]:
    """SQLite: sum the high and low 32 bits of each amount separately (each sum stays inside int64 for fewer than
    2^31 postings per account), join them in Python's unbounded integers, compare there."""
    high = postings.c.amount_minor.op(">>")(32)
    low = postings.c.amount_minor.op("&")(0xFFFFFFFF)
    sums = (
        select(
            postings.c.account_id,
            func.sum(high).label("high"),
            func.sum(low).label("low"),
        )
        .group_by(postings.c.account_id)
        .subquery()
    )
    query = select(
        accounts.c.kind,
        accounts.c.subject,
        accounts.c.currency,
        accounts.c.balance_minor,
        func.coalesce(sums.c.high, 0).label("high"),
        func.coalesce(sums.c.low, 0).label("low"),
    ).select_from(accounts.outerjoin(sums, sums.c.account_id == accounts.c.account_id))
    offenders: list[str] = []
    for r in connection.execute(query):
        total = int(r.high) * 2**32 + int(r.low)
        if total != r.balance_minor:
            offenders.append(
                f"account {r.kind}:{r.subject}:{r.currency}: balance {r.balance_minor}, postings sum to {total}"
            )
            if len(offenders) >= MAX_EXAMPLES:
                break
    return offenders


def _accounts_out_of_range(connection: Connection) -> list[str]:
    user_kinds = ("wallet", "payable")
    query = (
        select(accounts.c.kind, accounts.c.subject, accounts.c.currency, accounts.c.balance_minor)
        .where(
            or_(
                and_(accounts.c.non_negative.is_(True), accounts.c.balance_minor < 0),
                and_(
                    accounts.c.kind.in_(user_kinds),
                    or_(accounts.c.balance_minor < 0, accounts.c.balance_minor > MAX_USER_BALANCE_MINOR),
                ),
                accounts.c.balance_minor < -MAX_SYSTEM_BALANCE_MINOR,
                accounts.c.balance_minor > MAX_SYSTEM_BALANCE_MINOR,
            )
        )
        .limit(MAX_EXAMPLES)
    )
    return [f"account {r.kind}:{r.subject}:{r.currency}: balance {r.balance_minor}" for r in connection.execute(query)]


def _payment_entries(connection: Connection) -> list[str]:
    # Per payment: its own entries (kind = its type) and what they moved in (the sum of their positive postings).
    own = (
        select(
            journal_entries.c.payment_id,
            func.count(func.distinct(journal_entries.c.entry_id)).label("entries"),
            func.sum(case((postings.c.amount_minor > 0, postings.c.amount_minor), else_=0)).label("moved"),
        )
        .join(postings, postings.c.entry_id == journal_entries.c.entry_id)
        .where(journal_entries.c.kind.in_(("top_up", "purchase")))
        .group_by(journal_entries.c.payment_id)
        .subquery()
    )
    query = (
        select(
            payments.c.payment_id,
            payments.c.status,
            payments.c.amount_minor,
            func.coalesce(own.c.entries, 0).label("entries"),
            func.coalesce(own.c.moved, 0).label("moved"),
        )
        .select_from(payments.outerjoin(own, own.c.payment_id == payments.c.payment_id))
        .where(
            or_(
                and_(
                    payments.c.status.in_(MONEY_MOVED),
                    or_(func.coalesce(own.c.entries, 0) != 1, func.coalesce(own.c.moved, 0) != payments.c.amount_minor),
                ),
                and_(payments.c.status.not_in(MONEY_MOVED), func.coalesce(own.c.entries, 0) != 0),
            )
        )
        .limit(MAX_EXAMPLES)
    )
    return [
        f"payment {r.payment_id} ({r.status}, {r.amount_minor}): {r.entries} entr{'y' if r.entries == 1 else 'ies'} "
        f"moving {r.moved}"
        for r in connection.execute(query)
    ]


def _refund_totals(connection: Connection) -> list[str]:
    # A refund the provider refused was reversed (its money went back, the payment's refundable amount with it).
    totals = (
        select(refunds.c.payment_id, func.sum(refunds.c.amount_minor).label("total"))
        .where(refunds.c.status != "failed")
        .group_by(refunds.c.payment_id)
        .subquery()
    )
    refunded = func.coalesce(totals.c.total, 0)
    expected_status = case(
        (refunded == 0, literal("succeeded")),
        (refunded == payments.c.amount_minor, literal("refunded")),
        else_=literal("partially_refunded"),
    )
    query = (
        select(
            payments.c.payment_id,
            payments.c.status,
            payments.c.amount_minor,
            payments.c.refunded_minor,
            refunded.label("total"),
        )
        .select_from(payments.outerjoin(totals, totals.c.payment_id == payments.c.payment_id))
        .where(
            payments.c.status.in_(MONEY_MOVED),
            or_(
                refunded != payments.c.refunded_minor,
                refunded > payments.c.amount_minor,
                payments.c.status != expected_status,
            ),
        )
        .limit(MAX_EXAMPLES)
    )
    offenders = [
        f"payment {r.payment_id} ({r.status}, paid {r.amount_minor}): refunded_minor {r.refunded_minor}, "
        f"refunds sum to {r.total}"
        for r in connection.execute(query)
    ]
    orphans = (
        select(refunds.c.refund_id, refunds.c.entry_id)
        .select_from(refunds.outerjoin(journal_entries, journal_entries.c.entry_id == refunds.c.entry_id))
        .where(journal_entries.c.entry_id.is_(None))
        .limit(MAX_EXAMPLES)
    )
    offenders += [f"refund {r.refund_id}: entry {r.entry_id} is missing" for r in connection.execute(orphans)]
    return offenders[:MAX_EXAMPLES]


def _transfer_entries(connection: Connection) -> list[str]:
    query = (
        select(transfers.c.transfer_id, transfers.c.entry_id)
        .select_from(transfers.outerjoin(journal_entries, journal_entries.c.entry_id == transfers.c.entry_id))
        .where(journal_entries.c.entry_id.is_(None))
        .limit(MAX_EXAMPLES)
    )
    return [f"transfer {r.transfer_id}: entry {r.entry_id} is missing" for r in connection.execute(query)]


def _closed_payments(connection: Connection) -> list[str]:
    late = (
        select(journal_entries.c.payment_id, func.count().label("late"))
        .where(journal_entries.c.kind == "late_payment")
        .group_by(journal_entries.c.payment_id)
        .subquery()
    )
    totals = (
        select(refunds.c.payment_id, func.sum(refunds.c.amount_minor).label("total"))
        .group_by(refunds.c.payment_id)
        .subquery()
    )
    late_count = func.coalesce(late.c.late, 0)
    refunded = func.coalesce(totals.c.total, 0)
    query = (
        select(
            payments.c.payment_id,
            payments.c.amount_minor,
            payments.c.refunded_minor,
            late_count.label("late"),
            refunded.label("total"),
        )
        .select_from(
            payments.outerjoin(late, late.c.payment_id == payments.c.payment_id).outerjoin(
                totals, totals.c.payment_id == payments.c.payment_id
            )
        )
        .where(
            payments.c.status == "closed",
            or_(
                refunded != payments.c.refunded_minor,
                and_(payments.c.refunded_minor == 0, late_count != 0),
                and_(
                    payments.c.refunded_minor != 0,
                    or_(payments.c.refunded_minor != payments.c.amount_minor, late_count != 1),
                ),
            ),
        )
        .limit(MAX_EXAMPLES)
    )
    return [
        f"closed payment {r.payment_id} ({r.amount_minor}): refunded_minor {r.refunded_minor}, refunds {r.total}, "
        f"{r.late} late confirmation(s)"
        for r in connection.execute(query)
    ]
