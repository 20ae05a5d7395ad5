"""`paygate ledger seed` (stack/seed_ledger.py) writes a ledger that `paygate ledger verify` accepts, on every
database, with payments and idempotency records a retry of the same call would be answered from."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from runtime.db import Database, upgrade
from runtime.schema import accounts, idempotency_records, payments, postings
from stack.seed_ledger import seed
from tests.support import create_throwaway_database, drop_throwaway_database
from workers.domain.pricing import split_fee
from workers.domain.types import CreatePaymentCommand, Method, PaymentRecord, TopUpCommand, request_hash
from workers.ledger.verify import verify
from workers.store import records

POSTINGS, ACCOUNTS = 3_000, 300
# 2 postings a top-up, 3 a purchase, about two purchases a top-up: 375 top-ups and 750 purchases.
TOP_UPS, PURCHASES = 375, 750


@pytest.fixture
def empty_database(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """A database of the fixture's kind holding nothing else: the shared `database` also holds the raw ledger
    primitives' rows (tests/integration/test_ledger.py moves balances without entries), which verify reports."""
    if database_url.startswith("sqlite"):
        url, drop = f"sqlite:///{tmp_path / 'seeded.sqlite3'}", None
    else:
        url = drop = create_throwaway_database(database_url)
    database = Database(url)
    upgrade(database)
    yield database
    database.dispose()
    if drop:
        drop_throwaway_database(drop)


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def test_a_seeded_ledger_verifies_with_the_rows_it_reports(empty_database: Database) -> None:
    tag = _tag()
    report = seed(empty_database.url, postings=POSTINGS, accounts=ACCOUNTS, owner=f"seed-{tag}", prefix=f"s{tag}")

    entries = TOP_UPS + PURCHASES
    assert report.rows == {
        "accounts": ACCOUNTS + 2,  # and the platform's revenue and the SANDBOX clearing account
        "journal_entries": entries,
        "postings": POSTINGS,
        "payments": entries,
        "idempotency_records": entries,
    }
    assert report.shape == {"wallets": 150, "creators": 150, "top_ups": TOP_UPS, "purchases": PURCHASES}
    verified = verify(empty_database)
    assert verified.ok, verified.render()
    assert (verified.entries, verified.postings, verified.accounts, verified.payments) == (
        entries,
        POSTINGS,
        ACCOUNTS + 2,
        entries,
    )


def test_no_wallet_or_payable_ever_went_below_zero(empty_database: Database) -> None:
    tag = _tag()
    seed(empty_database.url, postings=POSTINGS, accounts=ACCOUNTS, owner=f"seed-{tag}", prefix=f"s{tag}")
    running = select(
        postings.c.account_id,
        postings.c.posting_id,
        postings.c.created_at,
        func.sum(postings.c.amount_minor)
        .over(partition_by=postings.c.account_id, order_by=postings.c.posting_id)
        .label("balance"),
    ).subquery()
    lowest = (
        select(func.min(running.c.balance))
        .join(accounts, accounts.c.account_id == running.c.account_id)
        .where(accounts.c.non_negative.is_(True))
    )
    with empty_database.read() as connection:
        assert connection.execute(lowest).scalar_one() >= 0
        times = connection.execute(select(postings.c.created_at).order_by(postings.c.posting_id)).scalars().all()
        assert times == sorted(times) and times[0] < times[-1]  # spread over time, rising with the posting ids


def test_payments_split_the_fee_and_retries_replay_them(empty_database: Database) -> None:
    tag = _tag()
    owner = f"seed-{tag}"
    seed(empty_database.url, postings=POSTINGS, accounts=ACCOUNTS, owner=owner, prefix=f"s{tag}")
    with empty_database.read() as connection:
        rows = connection.execute(select(payments).where(payments.c.owner == owner)).all()
        assert {(row.payment_type, row.method, row.status) for row in rows} == {
            ("top_up", "sandbox", "succeeded"),
            ("purchase", "wallet", "succeeded"),
        }
        purchases = [row for row in rows if row.payment_type == "purchase"]
        assert all(
            (row.creator_amount_minor, row.platform_fee_minor) == split_fee(row.amount_minor, 2000) for row in purchases
        )
        assert all(row.entry_id for row in rows)
        for row in (rows[0], purchases[-1]):
            stored = connection.execute(
                select(idempotency_records).where(
                    idempotency_records.c.owner == owner, idempotency_records.c.idempotency_key == row.order_id
                )
            ).one()
            # What a retry of the same call finds: the same fingerprint, and the payment as GetPayment answers it.
            assert stored.request_hash == request_hash(_command(row)) and stored.resource_id == row.payment_id
            assert PaymentRecord.from_json(bytes(stored.response)) == records.payment_by_order(
                connection, owner, row.order_id
            )


def _command(row: Any) -> TopUpCommand | CreatePaymentCommand:
    """The request that made a seeded payment, as the gateway decodes it (no price breakdown: list price = amount)."""
    values = {"order_id": row.order_id, "user_id": row.user_id, "amount_minor": row.amount_minor, "currency": "CNY"}
    if row.payment_type == "top_up":
        return TopUpCommand(**values, method=Method.SANDBOX)
    return CreatePaymentCommand(
        **values,
        method=Method.WALLET,
        payee_id=row.payee_id,
        description=row.description,
        list_price_minor=row.amount_minor,
    )


def test_seeding_again_adds_a_valid_ledger_and_refuses_a_used_prefix(empty_database: Database) -> None:
    tag = _tag()
    seed(empty_database.url, postings=POSTINGS, accounts=ACCOUNTS, owner=f"seed-{tag}", prefix=f"a{tag}")
    with pytest.raises(ValueError, match="seeded before"):
        seed(empty_database.url, postings=POSTINGS, accounts=ACCOUNTS, owner=f"seed-{tag}", prefix=f"a{tag}")
    second = seed(empty_database.url, postings=POSTINGS, accounts=ACCOUNTS, owner=f"seed-{tag}", prefix=f"b{tag}")

    assert second.rows["accounts"] == ACCOUNTS  # the platform's and the clearing account were there already
    verified = verify(empty_database)
    assert verified.ok, verified.render()
    assert (verified.postings, verified.accounts) == (2 * POSTINGS, 2 * ACCOUNTS + 2)


def test_the_command_is_refused_in_production_mode(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from stack.cli import main  # noqa: PLC0415

    # A production configuration whose database does not even exist: the refusal comes before any connection.
    monkeypatch.setenv("PAYGATE_MODE", "production")
    monkeypatch.setenv("PAYGATE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/nothing")
    monkeypatch.setenv("PAYGATE_REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("PAYGATE_MASTER_KEY", "not-used")
    monkeypatch.setenv("PAYGATE_RISK_RULES", "off")
    assert main(["ledger", "seed", "--postings", str(POSTINGS)]) == 2
    assert "refused in production mode" in capsys.readouterr().err


def test_the_commands_seed_and_explain_a_stack_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    """`paygate ledger seed` then `paygate db explain` on a data dir's SQLite file (the planner's choices on SQLite
    do not depend on the tables' sizes: it is never analyzed). Every hot statement is on an index and none sorts
    before its LIMIT; with nothing seeded, explain has nothing to bind the statements to (exit 2)."""
    from stack.cli import main  # noqa: PLC0415

    for name in ("PAYGATE_MODE", "PAYGATE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    empty, seeded = str(tmp_path / "empty"), str(tmp_path / "seeded")
    Path(empty).mkdir()
    assert main(["db", "upgrade", "--data-dir", empty]) == 0
    assert main(["db", "explain", "--data-dir", empty]) == 2
    assert "paygate ledger seed" in capsys.readouterr().err

    assert main(["ledger", "seed", "--postings", str(POSTINGS), "--prefix", "cli", "--data-dir", seeded]) == 0
    report = capsys.readouterr().out
    assert '"postings": 3000' in report and '"accounts": 302' in report  # default accounts: postings / 10, + 2
    assert main(["db", "explain", "--prefix", "cli", "--data-dir", seeded]) == 0
    plans = capsys.readouterr().out
    assert "every statement uses an index" in plans and "FULL SCAN" not in plans
    assert "USE TEMP B-TREE" not in plans and "sorts every matching row" not in plans
    assert "ix_payments_status_created_at" in plans  # the expiry sweeper's statement
    assert main(["ledger", "verify", "--data-dir", seeded]) == 0
