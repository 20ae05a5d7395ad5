"""`paygate db backup PATH` (docs/operations.md, "Back up and restore"): an online copy of a stack's SQLite database.

SQLite: Python's `sqlite3.Connection.backup` copies every page in one step, inside one read transaction of the
source. In WAL mode a reader never blocks the stack's writers and sees one committed state from start to end, so
the copy is a consistent snapshot however busy the stack is. (The `sqlite3` shell's `.backup` copies 100 pages
per step and starts again whenever another process commits, which under load can take very long.) The copy is
written next to PATH under a temporary name, switched to a rollback journal so it is one self-contained file,
checked with `PRAGMA integrity_check`, flushed to disk, and only then renamed to PATH; an existing PATH is never
overwritten.

PostgreSQL and MySQL/MariaDB have their own consistent online dump tools: the command prints the one to run (with
no password in it) and exits 2.

Exit status: 0 the copy is at PATH and checked; 1 the copy failed its integrity check (nothing is left at PATH);
2 nothing was copied (PATH exists, no database, or not SQLite).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from runtime.settings import Settings

BUSY_TIMEOUT_S = 30.0


class BackupRefused(Exception):
    """Nothing was copied; the message says why."""


def add_parser(db_commands: Any, common: Any) -> None:
    backup = db_commands.add_parser(
        "backup", help="copy the SQLite database to PATH while the stack runs (others: print the dump command)"
    )
    common(backup)
    backup.add_argument("path", type=Path, help="the new backup file (must not exist)")
    backup.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = make_url(settings.effective_database_url())
    if url.get_backend_name() != "sqlite":
        print(f"paygate: `db backup` copies SQLite only; for this database run:\n  {dump_command(url, args.path)}")
        return 2
    try:
        report = backup_sqlite(_sqlite_path(url), args.path)
    except BackupRefused as refused:
        print(f"paygate: {refused}", file=sys.stderr)
        return 2
    if report["integrity"] != "ok":
        print(f"paygate: the copy failed its integrity check ({report['integrity']}); nothing kept", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"backed up {report['source']} to {report['path']}: {report['bytes']} bytes, "
            f"schema revision {report['revision']}, integrity ok"
        )
    return 0


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise BackupRefused(f"not a SQLite file: {url.database!r}")
    return Path(url.database)


def backup_sqlite(source: Path, target: Path) -> dict[str, Any]:
    """Copy `source` to `target` in one snapshot; return what was written. Raises BackupRefused before copying."""
    if not source.is_file():
        raise BackupRefused(f"no database at {source} (has the stack ever started with this data directory?)")
    if target.exists():
        raise BackupRefused(f"{target} exists; give a new file name (a backup never overwrites)")
    if not target.parent.is_dir():
        raise BackupRefused(f"no directory {target.parent}")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        integrity, revision = _copy(source, temporary)
        if integrity != "ok":
            return {"source": str(source), "path": str(target), "integrity": integrity}
        _flush(temporary)
        os.link(temporary, target)  # fails rather than replace a file that appeared meanwhile
        _flush(target.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return {
        "source": str(source),
        "path": str(target),
        "bytes": target.stat().st_size,
        "revision": revision,
        "integrity": integrity,
    }


def _copy(source: Path, temporary: Path) -> tuple[str, str | None]:
    """The snapshot itself, then the checks on the copy (never on the live database)."""
    # mode=rw: a missing file is an error, never a new empty database.
    live = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S)
    copy = sqlite3.connect(temporary, isolation_level=None)
    try:
        live.backup(copy)  # pages=-1: every page in one step, one read transaction, one snapshot
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file; `serve` turns WAL on again
        integrity = "; ".join(str(row[0]) for row in copy.execute("PRAGMA integrity_check").fetchmany(5))
        revision = _revision(copy)
    finally:
        copy.close()
        live.close()
    return integrity, revision


def _revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None  # a database never migrated
    return str(row[0]) if row else None


def _flush(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def dump_command(url: URL, target: Path) -> str:
    """The consistent online dump of a PostgreSQL or MySQL/MariaDB database, without its password."""
    quoted = shlex.quote(str(target))
    if url.get_backend_name() == "postgresql":
        # libpq reads the password from PGPASSWORD or ~/.pgpass; the URI keeps host, port, user and options.
        plain = URL.create(
            "postgresql", username=url.username, host=url.host, port=url.port, database=url.database, query=url.query
        ).render_as_string(hide_password=False)
        return f"pg_dump --format=custom --file={quoted} --dbname={shlex.quote(plain)}"
    parts = ["mariadb-dump", "--single-transaction", "--quick", "--routines", "--default-character-set=utf8mb4"]
    parts += [f"--host={url.host or 'localhost'}", f"--port={url.port or 3306}"]
    # The password from ~/.my.cnf ([client] password=...) or MYSQL_PWD, never the command line.
    parts += [f"--user={shlex.quote(url.username or '')}", shlex.quote(url.database or "")]
    return " ".join(parts) + f" > {quoted}"
