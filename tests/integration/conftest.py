from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from runtime.db import Database, upgrade


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


_migrated: set[str] = set()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database (a throwaway one per session and backend; tests use their own ids)."""
    db = Database(database_url)
    if database_url not in _migrated:
        upgrade(db)
        _migrated.add(database_url)
    yield db
    db.dispose()
