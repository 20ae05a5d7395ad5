"""Engines and migrations for the three supported databases (docs/architecture.md, "Storage").

- SQLite (embedded default): WAL, a busy timeout, and `BEGIN IMMEDIATE` for every writing transaction, because
  SQLite ignores `SELECT … FOR UPDATE` and a deferred transaction that later writes can fail with SQLITE_BUSY
  instead of waiting. Reads use a second engine whose statements autocommit (a WAL snapshot per statement).
- PostgreSQL (production target) and MySQL/MariaDB: READ COMMITTED; balance updates are single conditional
  statements, so they re-check their WHERE clause against the latest committed row.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from runtime import outbox, process_metrics
from runtime.errors import ConfigurationError
from runtime.point_reads import PointReader

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Pick the drivers we ship (psycopg 3, PyMySQL) when a URL names only the database."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername in {"mysql", "mariadb"}:
        parsed = parsed.set(drivername="mysql+pymysql")
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str, *, writer: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        # The reader never opens a transaction, so there is nothing to roll back when a connection returns.
        pool_reset_on_return="rollback" if writer else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that our BEGIN is the one that runs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: every commit is fsynced before it returns, so an OK answer survives power loss (with NORMAL, WAL
        # commits reach the disk only at the next checkpoint). Its cost is paid back by group commit (docs/ledger.md).
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    if writer:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    # The reader emits no BEGIN: each statement is its own implicit transaction (autocommit), which is all the
    # single-statement reads of the hot path need and saves two round trips into SQLite per read.
    return engine


def _durable_postgres_commits(engine: Engine) -> None:
    """An OK answer means the movement is on disk: every session commits with synchronous_commit on, whatever the
    server's default (a server set to `off` would acknowledge commits it could still lose)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO on")
        dbapi_connection.commit()


# A worker cut off from the network in the middle of a transaction would keep its row locks (a hot creator's
# account, say) until the server noticed the dead connection, which without keepalives can take hours; every
# other worker would queue behind those locks. The server ends a session idle inside a transaction for this long
# instead, rolling it back (nothing was acknowledged, so nothing is lost). Our transactions never wait on the
# caller between statements, so a healthy one is never idle this long (docs/architecture.md, "Workers on other
# hosts"; decision #143).
IDLE_IN_TRANSACTION_TIMEOUT_S = 30


def _bounded_idle_transactions(engine: Engine, dialect: str) -> None:
    """Have the server end a session left idle inside a transaction (PostgreSQL, MariaDB; MySQL has no such
    setting and keeps its default)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            if dialect == "postgresql":
                cursor.execute(f"SET idle_in_transaction_session_timeout TO '{IDLE_IN_TRANSACTION_TIMEOUT_S}s'")
            else:
                cursor.execute("SELECT VERSION()")
                if "mariadb" in str(cursor.fetchone()[0]).lower():
                    cursor.execute(f"SET SESSION idle_transaction_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_S}")
        dbapi_connection.commit()


class WriterGate:
    """One writer at a time per SQLite file, across threads and processes, queued instead of polling.

    SQLite lets one transaction write at a time; a second `BEGIN IMMEDIATE` waits in SQLite's busy handler, which
    *sleeps* (1, 2, 5, 10 … 100 ms) and tries again. Sixteen threads of two workers fighting that way cost
    hundreds of milliseconds at p99 while the file sat idle between the sleeps (docs/benchmarks.md). The gate puts
    every writer of this stack in a queue in front of SQLite instead: a lock for the threads of one process, then
    an exclusive `flock` on `<database>-writer.lock` for the processes; the kernel wakes the next waiter the moment
    the holder lets go. The busy timeout stays as the back-stop for writers outside the gate (a `paygate` command
    run by hand). Readers never take it: WAL readers do not block the writer.
    """

    def __init__(self, database_path: Path) -> None:
        self._path = database_path.with_name(database_path.name + "-writer.lock")
        self._threads = threading.Lock()
        self._descriptor: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            if self._descriptor is None:
                self._descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._descriptor, fcntl.LOCK_EX)  # releases the GIL while it waits
            try:
                yield
            finally:
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None


def _sqlite_file(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


class Database:
    """A writer engine and a reader engine (the same one except on SQLite)."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self._gate: WriterGate | None = None
        # Told the highest event number after each commit that wrote events (a worker wakes its event streams).
        self.on_events: Callable[[int], None] | None = None
        # SQLite files only: single-row reads without the engine (runtime/point_reads.py).
        self.point_reader: PointReader | None = None
        if self.dialect == "sqlite":
            path = _sqlite_file(self.url)
            if path is not None:
                self._gate = WriterGate(path)
                self.point_reader = PointReader(path, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
            self.writer = _sqlite_engine(self.url, writer=True, pool_size=pool_size)
            self.reader = _sqlite_engine(self.url, writer=False, pool_size=pool_size)
        else:
            options: dict[str, Any] = {
                "pool_size": pool_size,
                "max_overflow": pool_size,
                "pool_pre_ping": True,
                "pool_recycle": 1800,
                "isolation_level": "READ COMMITTED",
            }
            self.writer = create_engine(self.url, **options)
            self.reader = self.writer
            if self.dialect == "postgresql":
                _durable_postgres_commits(self.writer)
            _bounded_idle_transactions(self.writer, self.dialect)
        # Statement latency and pool use, once this process has started its metrics (docs/metrics.md).
        for engine in {id(e): e for e in (self.writer, self.reader)}.values():
            process_metrics.instrument_engine(engine)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One writing transaction: commits on success, rolls back on any exception (on SQLite, behind the
        writer gate: one writer of the file at a time, queued). The events its changes added are written as its
        last statements (runtime/outbox.py); `on_events` hears of them once they are committed."""
        with self._gate.held() if self._gate is not None else nullcontext(), self.writer.begin() as connection:
            outbox.open_buffer(connection)
            try:
                yield connection
                last_seq = outbox.flush(connection)
            finally:
                outbox.discard(connection)
        if last_seq is not None and self.on_events is not None:
            self.on_events(last_seq)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.reader.begin() as connection:
            yield connection

    def dispose(self) -> None:
        if self._gate is not None:
            self._gate.close()
        if self.point_reader is not None:
            self.point_reader.close()
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "runtime:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent; run once at start by `serve` and by `paygate db upgrade`).

    On SQLite, adding a constraint rebuilds the table (copy, drop, rename), which foreign-key enforcement would
    refuse while other tables reference it; so migrations run with enforcement off (it can only be switched
    outside a transaction) and must leave `PRAGMA foreign_key_check` empty before they commit.
    """
    with database.writer.connect() as connection:
        driver = connection.connection.driver_connection if database.dialect == "sqlite" else None
        if driver is not None:
            driver.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                command.upgrade(alembic_config(connection), revision)
                if driver is not None and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise ConfigurationError("the migration left rows that break a foreign key; nothing was changed")
        finally:
            if driver is not None:
                driver.execute("PRAGMA foreign_keys = ON")


def current_revision(database: Database) -> str | None:
    with database.reader.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def require_current_schema(database: Database) -> None:
    """Refuse to read a database whose schema is not the one this code was written for."""
    current, head = current_revision(database), head_revision()
    if current != head:
        raise ConfigurationError(
            f"the database schema is at revision {current or 'none'}, this code needs {head}: run `paygate db upgrade`"
        )
