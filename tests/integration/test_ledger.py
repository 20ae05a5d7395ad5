from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from runtime.db import Database
from runtime.ids import new_id
from workers.domain.types import AccountKind
from workers.ledger import accounts as ledger


def _subject() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def test_ensure_account_is_idempotent_under_concurrency(database: Database) -> None:
    subject = _subject()
    ids: list[int] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with database.write() as connection:
                account = ledger.ensure_account(connection, AccountKind.PAYABLE, subject, "CNY", datetime.now(UTC))
            ids.append(account.account_id)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1


def test_fenced_debit_never_overdraws(database: Database) -> None:
    now = datetime.now(UTC)
    with database.write() as connection:
        wallet = ledger.ensure_account(connection, AccountKind.WALLET, _subject(), "CNY", now)
        ledger.apply_unfenced(connection, wallet, 100)
    with database.write() as connection:
        assert ledger.debit_fenced(connection, wallet.account_id, 101, 1) is ledger.DebitOutcome.INSUFFICIENT_FUNDS
        assert ledger.debit_fenced(connection, wallet.account_id, 100, 2) is ledger.DebitOutcome.APPLIED
    with database.read() as connection:
        account = ledger.find_account(connection, AccountKind.WALLET, wallet.subject, "CNY")
    assert account is not None and account.balance_minor == 0


def test_an_entry_and_its_postings_commit_together(database: Database) -> None:
    now = datetime.now(UTC)
    with database.write() as connection:
        a = ledger.ensure_account(connection, AccountKind.CLEARING, _subject(), "USD", now)
        b = ledger.ensure_account(connection, AccountKind.WALLET, _subject(), "USD", now)
    entry_id = new_id("je")
    with database.write() as connection:
        ledger.apply_unfenced(connection, a, -250)
        ledger.apply_unfenced(connection, b, 250)
        ledger.post_entry(
            connection,
            entry_id=entry_id,
            kind="top_up",
            owner="t",
            payment_id=None,
            now=now,
            entry_postings=[ledger.Posting(a.account_id, -250, "USD"), ledger.Posting(b.account_id, 250, "USD")],
        )
    with database.read() as connection:
        assert ledger.postings_sum(connection, a.account_id) == -250
        assert ledger.postings_sum(connection, b.account_id) == 250


def test_an_unbalanced_entry_rolls_the_whole_transaction_back(database: Database) -> None:
    now = datetime.now(UTC)
    with database.write() as connection:
        a = ledger.ensure_account(connection, AccountKind.CLEARING, _subject(), "USD", now)
    with pytest.raises(ledger.LedgerInvariantError), database.write() as connection:
        ledger.apply_unfenced(connection, a, 999)
        ledger.post_entry(
            connection,
            entry_id=new_id("je"),
            kind="top_up",
            owner="t",
            payment_id=None,
            now=now,
            entry_postings=[ledger.Posting(a.account_id, 999, "USD"), ledger.Posting(a.account_id, -998, "USD")],
        )
    with database.read() as connection:
        account = ledger.find_account(connection, AccountKind.CLEARING, a.subject, "USD")
    assert account is not None and account.balance_minor == 0
