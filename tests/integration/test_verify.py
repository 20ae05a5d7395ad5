"""`paygate ledger verify` passes on a ledger the services wrote, and names each kind of breach."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from runtime.db import Database, upgrade
from runtime.settings import Settings
from tests.support import create_throwaway_database, drop_throwaway_database
from workers.domain.types import Caller, CreatePaymentCommand, Method, RefundCommand, TopUpCommand, TransferCommand
from workers.ledger.verify import verify
from workers.wiring import build_service

CALLER = Caller(owner="verify", key_id="key_v", request_id="req_v")


def populate(database: Database, redis_url: str, prefix: str) -> dict[str, str]:
    service = build_service(
        Settings(channel_sim_listen="", redis_url=redis_url, redis_prefix=prefix), database, metrics=None
    )
    tag = uuid.uuid4().hex[:8]
    user, other, creator = f"u-{tag}", f"w-{tag}", f"c-{tag}"
    service.top_up(CALLER, TopUpCommand(f"t-{tag}", user, 10_000, "CNY", Method.SANDBOX))
    purchase = service.create_payment(
        CALLER, CreatePaymentCommand(f"p-{tag}", user, 3_000, "CNY", Method.WALLET, creator, "course")
    )
    service.refund_payment(CALLER, RefundCommand(purchase.payment_id, f"r-{tag}", 1_000, ""))
    service.transfer(CALLER, TransferCommand(f"x-{tag}", user, other, 500, "CNY"))
    return {"user": user, "creator": creator, "payment": purchase.payment_id, "entry": purchase.entry_id or ""}


@pytest.fixture
def fresh_database(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """An empty database of the same kind (the shared one also holds the raw ledger-primitive tests' rows)."""
    if database_url.startswith("sqlite"):
        url, drop = f"sqlite:///{tmp_path / 'fresh.sqlite3'}", None
    else:
        url = create_throwaway_database(database_url)
        drop = url
    database = Database(url)
    upgrade(database)
    yield database
    database.dispose()
    if drop:
        drop_throwaway_database(drop)


def test_a_ledger_written_by_the_services_verifies(fresh_database: Database, redis_url: str, redis_prefix: str) -> None:
    database = fresh_database
    populate(database, redis_url, redis_prefix)
    report = verify(database)
    assert report.ok, report.render()
    assert report.entries >= 4 and report.payments >= 2
    assert "ledger verify: OK" in report.render()


def test_late_confirmations_verify(fresh_database: Database, redis_url: str, redis_prefix: str) -> None:
    settings = Settings(
        channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, sandbox_confirmation="deferred"
    )
    service = build_service(settings, fresh_database, metrics=None)
    tag = uuid.uuid4().hex[:8]
    pending = service.top_up(CALLER, TopUpCommand(f"lt-{tag}", f"u-{tag}", 900, "CNY", Method.SANDBOX))
    assert service.close_expired(ttl_s=0) == 1
    service.confirm_payment(pending.payment_id)
    report = verify(fresh_database)
    assert report.ok, report.render()


@pytest.fixture
def scratch(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[tuple[Database, dict[str, str]]]:
    database = Database(f"sqlite:///{tmp_path / 'scratch.sqlite3'}")
    upgrade(database)
    ids = populate(database, redis_url, redis_prefix)
    assert verify(database).ok
    yield database, ids
    database.dispose()


def _sql(statement: str) -> Callable[[Connection, dict[str, str]], None]:
    return lambda connection, ids: connection.execute(text(statement), ids)


BREACHES = {
    "every balance equals the sum of its postings": _sql(
        "UPDATE accounts SET balance_minor = balance_minor + 1 WHERE kind = 'wallet' AND subject = :user"
    ),
    "every entry balances per currency": _sql(
        "UPDATE postings SET amount_minor = amount_minor + 1 WHERE posting_id = "
        "(SELECT MIN(posting_id) FROM postings WHERE entry_id = :entry)"
    ),
    "every balance is inside its range (no wallet or payable below 0)": _sql(
        "UPDATE accounts SET balance_minor = -1 WHERE kind = 'payable' AND subject = :creator"
    ),
    "every settled payment has exactly its own entry": _sql(
        "UPDATE journal_entries SET payment_id = NULL WHERE entry_id = :entry"
    ),
    "refunds match their payments": _sql(
        "UPDATE payments SET refunded_minor = 0, status = 'succeeded' WHERE payment_id = :payment"
    ),
    "closed payments moved nothing, or were refunded in full": _sql(
        "UPDATE payments SET status = 'closed' WHERE payment_id = :payment"
    ),
    "every posting is in its account's currency": _sql(
        "UPDATE postings SET currency = 'USD' WHERE posting_id = (SELECT MIN(posting_id) FROM postings)"
    ),
}


@pytest.mark.parametrize("check", sorted(BREACHES))
def test_each_breach_is_reported_by_its_check(scratch: tuple[Database, dict[str, str]], check: str) -> None:
    database, ids = scratch
    with database.write() as connection:
        # The schema's CHECK constraints would refuse some breaches; verify must find them even if they got in.
        connection.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        BREACHES[check](connection, ids)
    report = verify(database)
    assert not report.ok
    failed = {c.name for c in report.checks if not c.ok}
    assert check in failed, report.render()
    assert "ledger verify: BREACHED" in report.render()
