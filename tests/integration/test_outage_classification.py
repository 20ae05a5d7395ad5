"""A data store that is down is an outage to report in one line and retry, not a bug to trace
(workers/boundary.py): the classification of real failures from a real driver and a real socket."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.support import free_port
from workers.boundary import unavailable_store


def test_a_refused_redis_connection_is_an_outage_named_with_its_address() -> None:
    port = free_port()  # nothing listens there
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError) as refused:
        client.ping()
    store, cause = unavailable_store(refused.value) or ("", "")
    assert store == "redis"
    assert cause.startswith("ConnectionError: ") and f"127.0.0.1:{port}" in cause


def test_an_unreachable_database_is_an_outage_without_the_statement_or_its_parameters(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing-directory' / 'ledger.sqlite3'}")
    with pytest.raises(OperationalError) as unreachable, engine.connect() as connection:
        connection.execute(text("SELECT :secret"), {"secret": "card-4242424242424242"})
    store, cause = unavailable_store(unreachable.value) or ("", "")
    assert store == "database"
    assert cause.startswith("OperationalError (")
    assert "4242" not in cause and "SELECT" not in cause


def test_any_other_failure_is_not_an_outage(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (order_id TEXT PRIMARY KEY)"))
        connection.execute(text("INSERT INTO orders VALUES ('o-1')"))
    with pytest.raises(IntegrityError) as bug, engine.begin() as connection:
        connection.execute(text("INSERT INTO orders VALUES ('o-1')"))
    assert unavailable_store(bug.value) is None  # a broken constraint is a bug: traced, not shrugged off
    assert unavailable_store(ValueError("a bug")) is None
