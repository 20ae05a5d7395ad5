"""Tokenize, look up and (only to call the processor) reveal cards (docs/security.md, "Card and personal data").

Envelope encryption: each card gets a random 256-bit data key; the number is sealed with AES-256-GCM under that key
(associated data: the token and the owner, so a ciphertext moved to another row does not open), and the data key
is sealed by the master key ring (bound to the token). Rotating the master key rewraps data keys only.
The number lives in memory as a `Secret` and is revealed in one place: the card processor's request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import IntegrityError

from paygate.secret import Secret
from runtime.db import Database
from runtime.errors import FieldViolation, InvalidArgument, NotFound
from runtime.master_key import MasterKeyRing
from workers.domain.cards import VAULT_TOKEN_PREFIX, brand, expired, masked, new_vault_token
from workers.store import cards as rows

TOKEN_PREFIX = VAULT_TOKEN_PREFIX
DATA_KEY_PURPOSE = "card-data-key"
FINGERPRINT_PURPOSE = "card-fingerprint/v1"
_CARD_ENVELOPE = b"pgc1:"
_NONCE_BYTES = 12


@dataclass(frozen=True)
class NewCard:
    """A card to tokenize, as decoded from TokenizeCardRequest: the number (digits only) never leaves the Secret."""

    number: Secret[str]
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class StoredCard:
    """A vault token as it may be shown: never the number."""

    token: str
    last4: str
    brand: str
    exp_month: int
    exp_year: int

    @property
    def masked(self) -> str:
        return masked(self.last4)


@dataclass(frozen=True)
class RevealedCard:
    """What the processor needs to charge the card; the number stays a Secret until the request is built."""

    number: Secret[str]
    exp_month: int
    exp_year: int


def fingerprint(ring: MasterKeyRing, owner: str, number: str) -> list[str]:
    """The owner's fingerprints of a card under each master key of the ring, the current one first."""
    message = f"{owner}\x00{number}".encode()
    return [hmac.new(key, message, hashlib.sha256).hexdigest() for key in ring.derived_keys(FINGERPRINT_PURPOSE)]


def _card_associated_data(token: str, owner: str) -> bytes:
    return f"paygate/card/v1\x00{token}\x00{owner}".encode()


def seal_card(data_key: bytes, number: str, token: str, owner: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(data_key).encrypt(nonce, number.encode(), _card_associated_data(token, owner))
    return _CARD_ENVELOPE + nonce + sealed


def open_card(data_key: bytes, blob: bytes, token: str, owner: str) -> Secret[str]:
    if not blob.startswith(_CARD_ENVELOPE):
        raise ValueError(f"card {token} is not sealed in a known format")
    body = blob[len(_CARD_ENVELOPE) :]
    nonce, sealed = body[:_NONCE_BYTES], body[_NONCE_BYTES:]
    try:
        return Secret(AESGCM(data_key).decrypt(nonce, sealed, _card_associated_data(token, owner)).decode())
    except InvalidTag:
        raise ValueError(f"card {token} does not open with its data key (altered or moved)") from None


def card_not_found() -> NotFound:
    """One answer whether the token does not exist or is another owner's: the two must look the same."""
    return NotFound("no card token with this value exists for this API key's owner; tokenize the card first")


class CardVault:
    def __init__(self, database: Database, ring: MasterKeyRing, clock: Callable[[], datetime]) -> None:
        self._db = database
        self._ring = ring
        self._clock = clock

    def tokenize(self, owner: str, card: NewCard) -> StoredCard:
        """The owner's token for the card: the one it already has (with the expiry brought up to date), or new."""
        if expired(card.exp_month, card.exp_year, self._clock().date()):
            raise InvalidArgument([FieldViolation("exp_year", "the card has expired (exp_month/exp_year is past)")])
        number = card.number.reveal()
        prints = fingerprint(self._ring, owner, number)
        for _ in range(2):  # a second round only when a concurrent tokenize of the same card won the insert
            with self._db.write() as connection:
                existing = rows.by_fingerprints(connection, owner, prints)
                if existing is not None:
                    if (existing.exp_month, existing.exp_year) != (card.exp_month, card.exp_year):
                        rows.set_expiry(connection, owner, existing.token, card.exp_month, card.exp_year)
                    return StoredCard(existing.token, existing.last4, existing.brand, card.exp_month, card.exp_year)
            try:
                return self._insert(owner, number, prints[0], card)
            except IntegrityError:
                continue
        raise InvalidArgument([FieldViolation("card_number", "was being tokenized concurrently; try again")])

    def _insert(self, owner: str, number: str, current_print: str, card: NewCard) -> StoredCard:
        token = new_vault_token(lambda: secrets.token_hex(16))
        data_key = AESGCM.generate_key(bit_length=256)
        row = rows.CardRow(
            token=token,
            owner=owner,
            fingerprint=current_print,
            last4=number[-4:],
            brand=brand(number),
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            data_key_ciphertext=self._ring.seal(data_key, purpose=DATA_KEY_PURPOSE, context=token),
            card_ciphertext=seal_card(data_key, number, token, owner),
            created_at=self._clock(),
        )
        with self._db.write() as connection:
            rows.insert(connection, row)
        return StoredCard(token, row.last4, row.brand, row.exp_month, row.exp_year)

    def find(self, owner: str, token: str) -> StoredCard | None:
        with self._db.read() as connection:
            row = rows.by_token(connection, owner, token)
        return None if row is None else StoredCard(row.token, row.last4, row.brand, row.exp_month, row.exp_year)

    def reveal(self, owner: str, token: str) -> RevealedCard:
        """The card, to build the processor's request; NotFound for a token that is not the owner's."""
        with self._db.read() as connection:
            row = rows.by_token(connection, owner, token)
        if row is None:
            raise card_not_found()
        data_key = self._ring.open(row.data_key_ciphertext, purpose=DATA_KEY_PURPOSE, context=token)
        return RevealedCard(open_card(data_key, row.card_ciphertext, token, owner), row.exp_month, row.exp_year)
