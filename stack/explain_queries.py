"""The query plans of the hot statements on a seeded ledger: `paygate db explain [--analyze]`.

    paygate ledger seed --postings 1000000 && paygate db explain            # the data dir's SQLite file
    PAYGATE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/paygate paygate db explain --analyze

Each statement is the one the services run, imported from where they build it (workers/ledger/accounts.py,
workers/store/records.py, workers/execution/idempotency.py), bound to values taken from the rows `paygate ledger
seed` wrote (the busiest seeded wallet, its payments and order ids, the platform's revenue account; `--owner` and
`--prefix` name the seed's) and compiled by the connection's own dialect with the values inlined. Then: SQLite
`EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN (ANALYZE, BUFFERS)` (in a transaction that is rolled back, so the
updates change nothing), MariaDB/MySQL `EXPLAIN`. Each plan is followed by a verdict: the indexes it uses, or the
tables it reads in full (SQLite `SCAN`, PostgreSQL `Seq Scan` or an index scan with no `Index Cond`, MySQL access
type ALL or index), and a note when it sorts before its LIMIT. The command exits 1 when any statement reads
accounts, postings, payments or idempotency_records in full, 2 when there is no seeded ledger to sample.

The sample's own discovery queries read payments to find the seeded ones (tests/unit/test_owner_scoping_layout.py
allows this module so: an operator's tool that reads seed rows, never a caller's lookup).

`--analyze` refreshes the planner's statistics first (PostgreSQL `ANALYZE`, MySQL `ANALYZE TABLE`), as a server
with autovacuum would have done by itself; SQLite is never analyzed, because the stack never analyzes it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import BindParameter, ClauseElement, Connection, bindparam, func, select
from sqlalchemy.sql import visitors
from sqlalchemy.types import NullType

from runtime.db import Database, require_current_schema
from runtime.schema import accounts, payments, postings
from runtime.settings import Settings
from workers.domain.limits import MAX_SYSTEM_BALANCE_MINOR
from workers.domain.types import PLATFORM_SUBJECT, AccountKind
from workers.execution import idempotency
from workers.ledger import accounts as ledger
from workers.operations import expiry
from workers.operations.context import ORDER_SCOPE
from workers.operations.queries import NEWEST
from workers.store import records

WATCHED = ("accounts", "postings", "payments", "idempotency_records")
BATCH = 64  # the group committer's largest batch (docs/ledger.md, "Group commit")
PAGE = 21  # ListTransactions' default page of 20, plus the one that says whether there is more


class NoSample(Exception):
    """The database holds no seeded ledger of that prefix and owner."""


@dataclass(frozen=True)
class Sample:
    """Values from the seeded rows."""

    owner: str
    user: str  # the seeded wallet with the most postings
    wallet_id: int
    wallet_fence: int
    users: list[str]
    deep_before: int  # a posting id nine tenths of the way back into the user's history
    history: int
    payment_id: str
    order_id: str
    order_ids: list[str]
    revenue_id: int


def sample(connection: Connection, owner: str, prefix: str) -> Sample:
    """Discovery queries (full scans are fine here: they are not the statements under test)."""
    wallets = (
        select(accounts.c.account_id, accounts.c.subject, accounts.c.fence, func.count().label("n"))
        .join(postings, postings.c.account_id == accounts.c.account_id)
        .where(accounts.c.kind == AccountKind.WALLET.value, accounts.c.subject.startswith(f"{prefix}-u"))
        .group_by(accounts.c.account_id, accounts.c.subject, accounts.c.fence)
        .order_by(func.count().desc(), accounts.c.account_id)
        .limit(BATCH)
    )
    busiest = connection.execute(wallets).all()
    if not busiest:
        raise NoSample(f"no seeded wallets with prefix {prefix!r}: run `paygate ledger seed` first")
    top = busiest[0]
    deep = (
        select(postings.c.posting_id)
        .where(postings.c.account_id == top.account_id)
        .order_by(postings.c.posting_id)
        .offset(top.n // 10)
        .limit(1)
    )
    orders = connection.execute(
        select(payments.c.payment_id, payments.c.order_id)
        .where(payments.c.owner == owner, payments.c.user_id == top.subject)
        .order_by(payments.c.order_id)
        .limit(BATCH)
    ).all()
    if not orders:
        raise NoSample(f"no payments of owner {owner!r} for {top.subject}: pass the --owner the seed used")
    revenue = ledger.find_account(connection, AccountKind.REVENUE, PLATFORM_SUBJECT, "CNY")
    return Sample(
        owner=owner,
        user=top.subject,
        wallet_id=top.account_id,
        wallet_fence=top.fence,
        users=[row.subject for row in busiest],
        deep_before=connection.execute(deep).scalar_one(),
        history=top.n,
        payment_id=orders[0].payment_id,
        order_id=orders[0].order_id,
        order_ids=[row.order_id for row in orders],
        revenue_id=revenue.account_id if revenue else top.account_id,
    )


def statements(s: Sample) -> list[tuple[str, ClauseElement, dict[str, Any]]]:
    """(name, statement as the services build it, the values they bind) for each hot statement."""
    wallet = AccountKind.WALLET.value
    first = {"owner": s.owner, "account_id": s.wallet_id, "before_posting_id": NEWEST, "limit": PAGE}
    return [
        ("accounts._FIND_ACCOUNT", ledger._FIND_ACCOUNT, {"kind": wallet, "subject": s.user, "currency": "CNY"}),
        ("accounts._FIND_ACCOUNTS", ledger._FIND_ACCOUNTS, {"kinds": [wallet], "subjects": s.users}),
        (
            "accounts._FENCED_DEBIT",
            ledger._FENCED_DEBIT,
            {"target_id": s.wallet_id, "new_fence": s.wallet_fence + 1, "amount": 1},
        ),
        (
            "accounts._INCREMENT",
            ledger._INCREMENT,
            {
                "target_id": s.revenue_id,
                "amount": 1,
                "lowest_before": -MAX_SYSTEM_BALANCE_MINOR - 1,
                "highest_before": MAX_SYSTEM_BALANCE_MINOR - 1,
            },
        ),
        ("accounts._FENCE_OF", ledger._FENCE_OF, {"target_id": s.wallet_id}),
        ("idempotency._FIND", idempotency._FIND, {"owner": s.owner, "scope": ORDER_SCOPE, "key": s.order_id}),
        (
            "idempotency._FIND_MANY",
            idempotency._FIND_MANY,
            {"owners": [s.owner], "scope": ORDER_SCOPE, "keys": s.order_ids},
        ),
        (
            "records._EXPIRED (the expiry sweeper, every 5 s)",
            records._EXPIRED,
            {"cutoff": datetime.now(UTC) - timedelta(seconds=Settings.payment_ttl_s), "limit": expiry.MAX_PER_ROUND},
        ),
        ("records._PAYMENT_BY_ID", records._PAYMENT_BY_ID, {"owner": s.owner, "payment_id": s.payment_id}),
        ("records._PAYMENT_BY_ORDER", records._PAYMENT_BY_ORDER, {"owner": s.owner, "order_id": s.order_id}),
        (
            "records._WALLET_ACCOUNTS (ListTransactions: the user's wallets)",
            records._WALLET_ACCOUNTS,
            {"user_id": s.user},
        ),
        ("records._WALLET_POSTINGS (ListTransactions, per wallet), first page", records._WALLET_POSTINGS, first),
        (
            f"records._WALLET_POSTINGS, deep page (before {s.deep_before}, 9/10 into {s.history} postings)",
            records._WALLET_POSTINGS,
            {**first, "before_posting_id": s.deep_before},
        ),
    ]


def inline(statement: ClauseElement, values: dict[str, Any], connection: Connection) -> str:
    """The statement's SQL for this dialect with the values written in (expanding IN lists included)."""

    def bind(element: Any, **_kw: Any) -> Any:
        if isinstance(element, BindParameter) and element.key in values:
            # An untyped parameter (LIMIT) takes its type from the value, as it does when the services execute it.
            typed = None if isinstance(element.type, NullType) else element.type
            return bindparam(element.key, values[element.key], type_=typed, expanding=element.expanding)
        return None

    bound = cast(ClauseElement, visitors.replacement_traverse(statement, {}, bind))
    return str(bound.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))


def plan_lines(connection: Connection, sql: str) -> list[str]:
    dialect = connection.dialect.name
    if dialect == "sqlite":
        return [f"{row[3]}" for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    if dialect == "postgresql":
        return [row[0] for row in connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")]
    result = connection.exec_driver_sql(f"EXPLAIN {sql}")
    names = list(result.keys())
    return [" | ".join(f"{name}={value}" for name, value in zip(names, row, strict=True)) for row in result]


def verdict(dialect: str, lines: list[str]) -> tuple[list[str], list[str]]:
    """(indexes used, watched tables read in full)."""
    table_names = "|".join(WATCHED)
    used: list[str] = []
    full: list[str] = []
    if dialect == "sqlite":
        for line in lines:
            if match := re.search(rf"^SCAN ({table_names})\b", line):
                full.append(match[1])
            if match := re.search(r"USING (?:COVERING )?(INDEX \S+|INTEGER PRIMARY KEY|PRIMARY KEY)", line):
                used.append(match[1].removeprefix("INDEX "))
    elif dialect == "postgresql":
        full += _postgres_full_scans(lines, table_names)
        scans = r"(?:Index (?:Only )?Scan(?: Backward)? using|Bitmap Index Scan on) (\S+)"
        used += [m[1] for line in lines if (m := re.search(scans, line))]
    else:
        for line in lines:
            fields = dict(part.split("=", 1) for part in line.split(" | ") if "=" in part)
            if fields.get("table") in WATCHED and fields.get("type") in {"ALL", "index"}:
                full.append(fields["table"])
            if fields.get("key") not in {None, "None", ""}:
                used.append(f"{fields.get('table')}.{fields['key']}")
    return sorted(set(used)), sorted(set(full))


def _postgres_full_scans(lines: list[str], table_names: str) -> list[str]:
    """Seq Scans of watched tables, and index scans of them with no Index Cond (a walk of the whole index)."""
    full = []
    for number, line in enumerate(lines):
        if match := re.search(rf"Seq Scan on ({table_names})\b", line):
            full.append(match[1])
        elif match := re.search(rf"Index (?:Only )?Scan(?: Backward)? using \S+ on ({table_names})\b", line):
            depth = len(line) - len(line.lstrip(" ->"))
            details = []
            for following in lines[number + 1 :]:
                if len(following) - len(following.lstrip(" ->")) <= depth or "->" in following:
                    break
                details.append(following)
            if not any("Index Cond" in detail for detail in details):
                full.append(f"{match[1]} (whole index)")
    return full


def cost_notes(dialect: str, lines: list[str]) -> list[str]:
    """What a plan costs beyond its index: rows sorted before a LIMIT, rows read only to be filtered out."""
    text = "\n".join(lines)
    notes = []
    if "USE TEMP B-TREE FOR ORDER BY" in text or "Sort Key:" in text or "Using filesort" in text:
        notes.append("sorts every matching row before its LIMIT: the cost grows with the matching rows, not the page")
    if dialect == "postgresql":
        steps = [int(rows) * int(loops) for rows, loops in re.findall(r"actual time=\S+ rows=(\d+) loops=(\d+)", text)]
        dropped = sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", text))
        notes.append(f"largest step: {max(steps, default=0)} rows; {dropped} rows read and dropped by filters")
    return notes


def timing(connection: Connection, sql: str) -> list[str]:
    """Best of three runs of a SELECT (PostgreSQL's EXPLAIN ANALYZE times it already; updates are not run)."""
    if connection.dialect.name == "postgresql" or not sql.lstrip().upper().startswith("SELECT"):
        return []
    best = min(_run_once(connection, sql) for _ in range(3))
    return [f"runs in {best * 1000:.2f} ms (best of 3)"]


def _run_once(connection: Connection, sql: str) -> float:
    started = time.perf_counter()
    connection.exec_driver_sql(sql).all()
    return time.perf_counter() - started


def explain(database: Database, sample_of: Callable[[Connection], Sample]) -> bool:
    """Print every plan; True when no statement reads a watched table in full."""
    clean = True
    # The reader: on SQLite it takes no write lock (the writer would BEGIN IMMEDIATE); elsewhere it is the writer.
    with database.reader.connect() as connection:
        transaction = connection.begin()
        try:
            chosen = sample_of(connection)
            print(f"# {database.dialect}: owner {chosen.owner}, user {chosen.user} ({chosen.history} postings)")
            for name, statement, values in statements(chosen):
                sql = inline(statement, values, connection)
                lines = plan_lines(connection, sql)
                used, full = verdict(database.dialect, lines)
                clean = clean and not full
                print(f"\n## {name}\n{' '.join(sql.split())}\n")
                print("\n".join(f"    {line}" for line in lines))
                print(f"  -> FULL SCAN of {', '.join(full)}" if full else f"  -> index: {', '.join(used) or '(none)'}")
                for note in cost_notes(database.dialect, lines) + timing(connection, sql):
                    print(f"  -> {note}")
        finally:
            transaction.rollback()
    return clean


def analyze(database: Database) -> None:
    if database.dialect == "sqlite":
        return
    with database.writer.connect() as connection:
        for table in (*WATCHED, "journal_entries", "payment_attempts"):
            statement = f"ANALYZE {table}" if database.dialect == "postgresql" else f"ANALYZE TABLE {table}"
            connection.exec_driver_sql(statement).close()
        connection.commit()


def run(database_url: str, owner: str, prefix: str, *, refresh_statistics: bool) -> bool:
    """`paygate db explain`: True when every statement uses an index (NoSample when nothing was seeded)."""
    database = Database(database_url, pool_size=1)
    try:
        require_current_schema(database)  # the plans of this code's statements need this code's indexes
        if refresh_statistics:
            analyze(database)
        clean = explain(database, lambda connection: sample(connection, owner, prefix))
    finally:
        database.dispose()
    print("\nevery statement uses an index" if clean else "\nAT LEAST ONE STATEMENT READS A TABLE IN FULL")
    return clean
