from __future__ import annotations

import os
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.key_limits import KeyLimits
from gateway.keystore import KeyStore, load_master_key
from runtime import audit
from runtime.db import Database
from runtime.errors import ConfigurationError
from runtime.master_key import MasterKeyRing
from runtime.schema import api_keys
from runtime.settings import Settings


@pytest.fixture
def store(database: Database) -> KeyStore:
    audit.enable(database, audit.ChainKey(secrets.token_bytes(32)))  # key changes are audited
    return KeyStore(database, MasterKeyRing(os.urandom(32)))


def test_create_lookup_list_revoke(store: KeyStore) -> None:
    name = f"svc-{uuid.uuid4().hex[:6]}"
    created = store.create(name, "payments:write,balances:read")
    assert created.secret.startswith("sk_") and len(created.secret) > 40
    found = store.lookup(created.key.key_id)
    assert found is not None
    assert found.secret == created.secret
    assert found.key.scopes == ("balances:read", "payments:write")
    assert created.key.key_id in {k.key_id for k in store.list()}
    assert store.revoke(created.key.key_id)
    assert not store.revoke(created.key.key_id)  # already revoked
    revoked = store.lookup(created.key.key_id)
    assert revoked is not None and revoked.key.revoked
    assert store.lookup("key_missing") is None


def test_the_secret_is_never_stored_in_clear(store: KeyStore, database: Database) -> None:
    created = store.create("svc", "*")
    with database.read() as connection:
        row = connection.execute(select(api_keys).where(api_keys.c.key_id == created.key.key_id)).one()
    stored = b"".join(str(v).encode() if not isinstance(v, bytes) else v for v in row)
    assert created.secret.encode() not in stored


def test_a_wrong_master_key_is_a_clear_configuration_error(store: KeyStore, database: Database) -> None:
    created = store.create("svc", "*")
    with pytest.raises(ConfigurationError, match="master key"):
        KeyStore(database, MasterKeyRing(os.urandom(32))).lookup(created.key.key_id)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65])
def test_bad_names_and_scopes_are_refused(store: KeyStore, name: str) -> None:
    with pytest.raises(ValueError):
        store.create(name, "*")
    with pytest.raises(ValueError, match="unknown scope"):
        store.create("svc", "everything")


def test_dev_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_master_key(settings)
    key_file = tmp_path / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    blob = first.seal(b"x", purpose="test")
    assert load_master_key(settings).open(blob, purpose="test") == b"x"


def test_limits_rotation_and_last_use_round_trip(store: KeyStore) -> None:
    created = store.create("svc", "*", KeyLimits(rate_per_s=0.25, burst=3, max_concurrent_calls=2))
    key_id = created.key.key_id
    assert store.set_limits(key_id, {"rate_per_s": None, "user_rate_per_s": 1.5, "user_burst": 4})
    found = store.lookup(key_id)
    assert found is not None
    assert found.key.limits == KeyLimits(None, 3, 1.5, 4, 2)
    with pytest.raises(ValueError, match="unknown limits"):
        store.set_limits(key_id, {"secret_ciphertext": 1})

    rotated = store.rotate(key_id, timedelta(hours=1))
    assert rotated is not None and rotated.secret != created.secret
    found = store.lookup(key_id)
    assert found is not None and found.secret == rotated.secret and found.previous_secret == created.secret
    expires = found.key.previous_secret_expires_at
    assert expires is not None
    assert found.previous_valid_at(expires - timedelta(seconds=1)) == created.secret
    assert found.previous_valid_at(expires) is None

    later = datetime.now(UTC).replace(microsecond=0)
    store.record_last_used({key_id: later})
    store.record_last_used({key_id: later - timedelta(minutes=5)})  # an older time never moves it back
    found = store.lookup(key_id)
    assert found is not None and found.key.last_used_at == later

    assert store.revoke(key_id)
    assert store.rotate(key_id, timedelta(hours=1)) is None
    assert not store.set_limits(key_id, {"burst": 1})


def test_a_secret_sealed_for_one_key_does_not_open_for_another(store: KeyStore, database: Database) -> None:
    """The blob is bound to its row: copying one key's ciphertext onto another key's row makes it unreadable."""
    first, second = store.create("svc", "*"), store.create("svc", "*")
    with database.write() as connection:
        blob = connection.execute(
            select(api_keys.c.secret_ciphertext).where(api_keys.c.key_id == first.key.key_id)
        ).scalar_one()
        connection.execute(
            api_keys.update().where(api_keys.c.key_id == second.key.key_id).values(secret_ciphertext=blob)
        )
    with pytest.raises(ConfigurationError, match="master key"):
        store.lookup(second.key.key_id)
    found = store.lookup(first.key.key_id)
    assert found is not None and found.secret == first.secret
