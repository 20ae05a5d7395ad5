"""Fixtures shared by every test layer; see tests/support.py for the real components behind them."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runtime.redis_support import EmbeddedRedis
from tests.support import (
    MYSQL_ENV,
    POSTGRES_ENV,
    REDIS_ENV,
    create_throwaway_database,
    delete_prefix,
    drop_throwaway_database,
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get(REDIS_ENV)
    if configured:
        yield configured
        return
    # Short path: Unix socket paths are limited to ~100 characters.
    work_dir = Path(tempfile.mkdtemp(prefix="pgredis-"))
    server = EmbeddedRedis(work_dir / "redis.sock", work_dir)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"paygate-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    delete_prefix(client, prefix)
    client.close()


def _server_database(env: str) -> Iterator[str]:
    server = os.environ.get(env)
    if not server:
        pytest.skip(f"set {env} to run this against a real server")
    url = create_throwaway_database(server)
    yield url
    drop_throwaway_database(url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from _server_database(POSTGRES_ENV)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    yield from _server_database(MYSQL_ENV)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'paygate.sqlite3'}"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database the test should run on: SQLite always, the servers when configured."""
    return str(request.getfixturevalue(f"{request.param}_url"))
