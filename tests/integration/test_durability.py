"""An OK answer means the movement is on disk (issue 8, docs/ledger.md): every writing session commits durably."""

from __future__ import annotations

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
