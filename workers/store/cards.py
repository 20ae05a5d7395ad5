"""Rows of the card vault (docs/security.md, "Card and personal data"). Every statement a caller's request can
reach names the owner: another owner's token behaves exactly as one that does not exist."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from runtime.schema import card_tokens
from workers.store.moments import utc

_BY_TOKEN = select(card_tokens).where(
    card_tokens.c.owner == bindparam("owner"), card_tokens.c.token == bindparam("token")
)
_BY_FINGERPRINTS = select(card_tokens).where(
    card_tokens.c.owner == bindparam("owner"), card_tokens.c.fingerprint.in_(bindparam("fingerprints", expanding=True))
)
_NEW_EXPIRY = (
    update(card_tokens)
    .where(card_tokens.c.owner == bindparam("target_owner"), card_tokens.c.token == bindparam("target"))
    .values(exp_month=bindparam("month"), exp_year=bindparam("year"))
)


@dataclass(frozen=True)
class CardRow:
    token: str
    owner: str
    fingerprint: str
    last4: str
    brand: str
    exp_month: int
    exp_year: int
    data_key_ciphertext: bytes
    card_ciphertext: bytes
    created_at: datetime


def _row(found: object) -> CardRow:
    values = {name: getattr(found, name) for name in CardRow.__dataclass_fields__}
    values["created_at"] = utc(values["created_at"])
    values["data_key_ciphertext"] = bytes(values["data_key_ciphertext"])
    values["card_ciphertext"] = bytes(values["card_ciphertext"])
    return CardRow(**values)


def by_token(connection: Connection, owner: str, token: str) -> CardRow | None:
    found = connection.execute(_BY_TOKEN, {"owner": owner, "token": token}).first()
    return None if found is None else _row(found)


def by_fingerprints(connection: Connection, owner: str, fingerprints: list[str]) -> CardRow | None:
    found = connection.execute(_BY_FINGERPRINTS, {"owner": owner, "fingerprints": fingerprints}).first()
    return None if found is None else _row(found)


def insert(connection: Connection, row: CardRow) -> None:
    connection.execute(card_tokens.insert().values(**row.__dict__))


def set_expiry(connection: Connection, owner: str, token: str, month: int, year: int) -> None:
    """A renewed card keeps its number and gets a new expiry: the token follows it."""
    connection.execute(_NEW_EXPIRY, {"target_owner": owner, "target": token, "month": month, "year": year})
