"""An OK answer means the movement is on disk (issue 8, docs/ledger.md): every writing session commits durably."""

from __future__ import annotations

import pytest

from runtime.db import Database


def test_every_commit_is_durable(database: Database) -> None:
    with database.write() as connection:
        if database.dialect == "sqlite":
            # 2 = FULL: the WAL is fsynced at every commit, not only at checkpoints.
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        elif database.dialect == "postgresql":
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        else:
            # MySQL/MariaDB: durability is the server's innodb_flush_log_at_trx_commit (global, 1 by default).
            flush = connection.exec_driver_sql("SELECT @@innodb_flush_log_at_trx_commit").scalar()
            assert int(flush) == 1


def test_a_session_left_idle_inside_a_transaction_is_ended_by_the_server(database: Database) -> None:
    """A worker cut off mid-transaction must not hold its row locks until the server notices the dead connection
    (docs/architecture.md, "Workers on other hosts"): the server ends such a session after a bound."""
    if database.dialect == "sqlite":
        pytest.skip("SQLite is one machine's file: a dead holder's locks go with its file descriptors")
    with database.write() as connection:
        if database.dialect == "postgresql":
            assert connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "30s"
        else:
            assert int(connection.exec_driver_sql("SELECT @@idle_transaction_timeout").scalar()) == 30
