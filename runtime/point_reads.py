"""Single-row reads on SQLite without the engine around them (docs/architecture.md, "Storage").

A balance read through a SQLAlchemy connection costs about 110 µs of CPU on this project's 2-core machine, almost
all of it the engine's checkout, transaction and result plumbing around a 7 µs SQLite lookup (docs/benchmarks.md).
On the hot read path a worker therefore runs the same statement — compiled once from the SQLAlchemy expression, so
the SQL still has one source — on a raw `sqlite3` connection of its own thread. Reads only: the connection is
`query_only`, and each statement is its own implicit transaction (one WAL snapshot), as on the reader engine.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.expression import Select


@dataclass(frozen=True)
class CompiledRead:
    """A SELECT in SQLite's SQL with its positional parameter names."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: Select[Any]) -> CompiledRead:
        compiled = statement.compile(dialect=sqlite.dialect())
        return cls(str(compiled), tuple(compiled.positiontup or ()))


class PointReader:
    """One raw read-only connection per thread that uses it (sqlite3 connections stay on their thread)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def first(self, read: CompiledRead, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._open()
        row: tuple[Any, ...] | None = connection.execute(read.sql, tuple(params[n] for n in read.names)).fetchone()
        return row

    def close(self) -> None:
        """Close every thread's connection (at shutdown, when no read runs any more)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False only so that close() may run on another thread; reads stay on their own.
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        connection.execute("PRAGMA query_only = ON")
        with self._lock:
            self._opened.append(connection)
        self._local.connection = connection
        return connection
