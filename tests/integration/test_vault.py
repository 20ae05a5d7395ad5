"""The card vault and `paygate keys rewrap` on each database (workers/vault/cards.py, stack/rewrap.py)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from gateway.keystore import KeyStore
from paygate.secret import Secret
from runtime import audit
from runtime.db import Database
from runtime.errors import InvalidArgument, NotFound
from runtime.master_key import MasterKeyRing
from runtime.schema import api_keys, card_tokens, webhook_endpoints
from stack.rewrap import SEALED_COLUMNS, Counts, _rewrap_row, rewrap_all
from tests.support import private_database
from workers.vault.cards import CardVault, NewCard
from workers.webhooks.endpoints import Endpoints

CARD = "4242424242424242"


def now() -> datetime:
    return datetime(2026, 11, 28, tzinfo=UTC)


def card(number: str = CARD, year: int = 2031) -> NewCard:
    return NewCard(Secret(number), 12, year)


def owner() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fresh_database(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """An empty database of the same kind: the rewrap reads every row, and the shared one holds rows sealed by
    other tests' throwaway keys."""
    with private_database(None if database_url.startswith("sqlite") else database_url, tmp_path) as database:
        audit.enable(database, audit.ChainKey(os.urandom(32)))  # key and webhook changes are audited
        yield database


def test_a_card_is_kept_encrypted_deduplicated_per_owner_and_revealed_only_to_it(database: Database) -> None:
    vault = CardVault(database, MasterKeyRing(os.urandom(32)), now)
    mine, theirs = owner(), owner()
    stored = vault.tokenize(mine, card())
    assert stored.token.startswith("pgcard_") and stored.masked == "**** 4242" and stored.brand == "visa"
    renewed = vault.tokenize(mine, card(year=2033))
    assert renewed.token == stored.token and renewed.exp_year == 2033  # same card, same token, new expiry
    assert vault.tokenize(theirs, card()).token != stored.token
    assert vault.reveal(mine, stored.token).number.reveal() == CARD
    assert vault.find(theirs, stored.token) is None
    with pytest.raises(NotFound) as foreign:
        vault.reveal(theirs, stored.token)
    with pytest.raises(NotFound) as missing:
        vault.reveal(mine, "pgcard_" + "0" * 32)
    assert str(foreign.value) == str(missing.value)  # another owner's token looks exactly like none
    with database.read() as connection:
        row = connection.execute(select(card_tokens).where(card_tokens.c.token == stored.token)).one()
    assert CARD.encode() not in b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    assert (row.last4, row.exp_year) == ("4242", 2033)


def test_an_expired_card_is_refused_and_nothing_is_written(database: Database) -> None:
    vault = CardVault(database, MasterKeyRing(os.urandom(32)), now)
    mine = owner()
    with pytest.raises(InvalidArgument, match="expired"):
        vault.tokenize(mine, card(year=2025))
    with database.read() as connection:
        assert connection.execute(select(card_tokens).where(card_tokens.c.owner == mine)).first() is None


def test_a_card_ciphertext_moved_to_another_row_does_not_open(database: Database) -> None:
    vault = CardVault(database, MasterKeyRing(os.urandom(32)), now)
    mine = owner()
    first, second = vault.tokenize(mine, card()), vault.tokenize(mine, card("5555555555554444"))
    with database.write() as connection:
        moved = connection.execute(
            select(card_tokens.c.card_ciphertext).where(card_tokens.c.token == first.token)
        ).scalar_one()
        connection.execute(
            card_tokens.update().where(card_tokens.c.token == second.token).values(card_ciphertext=moved)
        )
    with pytest.raises(ValueError, match="does not open"):
        vault.reveal(mine, second.token)


def test_rewrap_moves_every_secret_to_the_new_key_and_is_idempotent(fresh_database: Database) -> None:
    database = fresh_database
    old, new = os.urandom(32), os.urandom(32)
    before = MasterKeyRing(old)
    first = KeyStore(database, before).create("svc", "*")
    key = KeyStore(database, before).rotate(first.key.key_id, timedelta(hours=1))  # a previous secret too
    assert key is not None
    endpoints = Endpoints(database, before, require_https=False)
    made = endpoints.add("svc", "https://example.test/hook", [], now())
    endpoints.rotate("svc", made.endpoint.endpoint_id, now())  # a previous secret too
    stored = CardVault(database, before, now).tokenize("svc", card())
    legacy_key = KeyStore(database, before).create("legacy", "*")
    with database.write() as connection:  # as written before the ring: a Fernet token under the old key
        fernet = Fernet(base64.urlsafe_b64encode(old)).encrypt(legacy_key.secret.encode())
        connection.execute(
            api_keys.update().where(api_keys.c.key_id == legacy_key.key.key_id).values(secret_ciphertext=fernet)
        )

    rotated = MasterKeyRing(new, [old])
    dry = rewrap_all(database, rotated, dry_run=True)
    assert {name: c.rewrapped for name, c in dry.items()} == {
        "api_keys.secret_ciphertext": 2,
        "api_keys.previous_secret_ciphertext": 1,
        "webhook_endpoints.secret_ciphertext": 1,
        "webhook_endpoints.previous_secret_ciphertext": 1,
        "card_tokens.data_key_ciphertext": 1,
    }
    done = rewrap_all(database, rotated, dry_run=False)
    assert {name: c.rewrapped for name, c in done.items()} == {name: c.rewrapped for name, c in dry.items()}
    again = rewrap_all(database, rotated, dry_run=False)
    assert all(c.rewrapped == 0 and not c.unreadable for c in again.values())
    assert sum(c.current for c in again.values()) == 6

    after = MasterKeyRing(new)  # the old key dropped: everything still opens
    found = KeyStore(database, after).lookup(key.key.key_id)
    assert found is not None and found.secret == key.secret and found.previous_secret == first.secret
    legacy = KeyStore(database, after).lookup(legacy_key.key.key_id)
    assert legacy is not None and legacy.secret == legacy_key.secret
    (endpoint,) = Endpoints(database, after, require_https=False).of_owner("svc")
    assert len(Endpoints(database, after, require_https=False).signing_secrets(endpoint, now())) == 2
    vault = CardVault(database, after, now)
    assert vault.reveal("svc", stored.token).number.reveal() == CARD
    assert vault.tokenize("svc", card()).token == stored.token  # the fingerprint moved to the new key too


def test_rewrap_writes_only_the_blob_it_read_and_reports_what_no_key_opens(fresh_database: Database) -> None:
    database = fresh_database
    old, new = os.urandom(32), os.urandom(32)
    endpoints = Endpoints(database, MasterKeyRing(old), require_https=False)
    made = endpoints.add("svc", "https://example.test/hook", [], now())
    with database.read() as connection:
        stale = connection.execute(select(webhook_endpoints)).one()
    # The owner rotates the secret between the rewrap's read and its write.
    Endpoints(database, MasterKeyRing(new, [old]), require_https=False).rotate("svc", made.endpoint.endpoint_id, now())
    column = next(c for c in SEALED_COLUMNS if c.name == "webhook_endpoints.secret_ciphertext")
    counts = rewrap_all(database, MasterKeyRing(new, [old]), dry_run=True)["webhook_endpoints.secret_ciphertext"]
    assert counts.current == 1  # the rotation sealed the new secret under the current key
    raced = Counts()
    _rewrap_row(database, MasterKeyRing(new, [old]), column, stale, raced, dry_run=False)
    assert raced.changed_meanwhile == 1 and raced.rewrapped == 0
    (endpoint,) = Endpoints(database, MasterKeyRing(new), require_https=False).of_owner("svc")
    assert endpoint.secret_ciphertext != bytes(stale.secret_ciphertext)  # the rotation's secret stands

    unknown = rewrap_all(database, MasterKeyRing(os.urandom(32)), dry_run=False)
    assert unknown["webhook_endpoints.previous_secret_ciphertext"].unreadable == [made.endpoint.endpoint_id]
