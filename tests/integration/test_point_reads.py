"""Balance reads on a raw SQLite connection (runtime/point_reads.py) answer exactly what the engine answers."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.db import Database, upgrade
from workers.domain.types import AccountKind
from workers.ledger import accounts


def test_only_sqlite_files_get_a_point_reader(database: Database) -> None:
    assert (database.point_reader is not None) == (database.dialect == "sqlite")


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    """A database of its own: these tests move balances without journal entries, which `ledger verify` in other
    tests of a shared database would rightly report."""
    db = Database(f"sqlite:///{tmp_path / 'point-reads.sqlite3'}")
    upgrade(db)
    yield db
    db.dispose()


def test_a_point_read_sees_every_committed_change_like_the_engine(sqlite_database: Database) -> None:
    database = sqlite_database
    reader = database.point_reader
    assert reader is not None
    subject = f"u-{uuid.uuid4().hex[:10]}"
    assert accounts.point_read_account(reader, AccountKind.WALLET, subject, "CNY") is None

    with database.write() as connection:
        created = accounts.ensure_account(connection, AccountKind.WALLET, subject, "CNY", datetime.now(UTC))
        assert accounts.apply_unfenced(connection, created, 1_234)
    with database.read() as connection:
        expected = accounts.find_account(connection, AccountKind.WALLET, subject, "CNY")
    assert expected is not None and expected.balance_minor == 1_234
    assert accounts.point_read_account(reader, AccountKind.WALLET, subject, "CNY") == expected
    # Other currencies and kinds of the same subject are other accounts.
    assert accounts.point_read_account(reader, AccountKind.WALLET, subject, "USD") is None
    assert accounts.point_read_account(reader, AccountKind.PAYABLE, subject, "CNY") is None

    # A later commit shows in the next read on the same (kept) connection: each read is its own snapshot.
    with database.write() as connection:
        assert accounts.apply_unfenced(connection, expected, -234)
    found = accounts.point_read_account(reader, AccountKind.WALLET, subject, "CNY")
    assert found is not None and found.balance_minor == 1_000


def test_point_read_connections_cannot_write_and_belong_to_their_thread(sqlite_database: Database) -> None:
    database = sqlite_database
    reader = database.point_reader
    assert reader is not None
    subject = f"u-{uuid.uuid4().hex[:10]}"
    with database.write() as connection:
        accounts.ensure_account(connection, AccountKind.WALLET, subject, "CNY", datetime.now(UTC))

    found: list[object] = []
    thread = threading.Thread(
        target=lambda: found.append(accounts.point_read_account(reader, AccountKind.WALLET, subject, "CNY"))
    )
    thread.start()
    thread.join()
    assert found and found[0] == accounts.point_read_account(reader, AccountKind.WALLET, subject, "CNY")

    own = reader._local.connection  # the calling thread's connection
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        own.execute("UPDATE accounts SET balance_minor = 0")
