from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from runtime.db import Database, alembic_config, current_revision, upgrade
from runtime.schema import metadata

HEAD = "0015"


def test_migrations_build_exactly_the_declared_schema(database: Database) -> None:
    with database.writer.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_upgrade_is_idempotent(database: Database) -> None:
    before = current_revision(database)
    upgrade(database)
    assert current_revision(database) == before == HEAD


def test_every_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    """Walk the chain down to nothing and back on a separate database of the same kind."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the round trip runs on SQLite; the other databases share the migration code")
    path = Path(database_url.removeprefix("sqlite:///")).with_name("roundtrip.sqlite3")
    scratch = Database(f"sqlite:///{path}")
    try:
        upgrade(scratch)
        with scratch.writer.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert current_revision(scratch) is None
        upgrade(scratch)
        assert current_revision(scratch) == HEAD
    finally:
        scratch.dispose()
