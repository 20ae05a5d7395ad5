from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from paygate.db import Database, current_revision, upgrade
from paygate.schema import metadata


def test_migrations_build_exactly_the_declared_schema(database: Database) -> None:
    with database.writer.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_upgrade_is_idempotent(database: Database) -> None:
    before = current_revision(database)
    upgrade(database)
    assert current_revision(database) == before == "0001"
