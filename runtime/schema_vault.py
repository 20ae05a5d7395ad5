"""The card vault's table (docs/security.md, "Card and personal data"), on the schema's one MetaData.

A card number is stored only envelope-encrypted: `card_ciphertext` is the number sealed with AES-256-GCM under a
random data key of its own, and `data_key_ciphertext` is that data key sealed by the master key ring (so a
master-key rotation rewraps 32-byte keys, never card numbers). `fingerprint` is a keyed HMAC of the owner and the
number (derived from the master key): it finds the owner's earlier token for the same card without the number,
and cannot be recomputed by anyone holding only the database. `last4` and `brand` are what may be shown.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, LargeBinary, SmallInteger, String, Table, UniqueConstraint

from runtime.schema_base import BINARY_TEXT, ID_LENGTH, NAME_LENGTH, metadata

card_tokens = Table(
    "card_tokens",
    metadata,
    Column("token", String(ID_LENGTH), primary_key=True),  # pgcard_ + 32 hex digits; random, so unguessable
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # hex HMAC-SHA256 (owner, number) under a derived key
    Column("last4", String(4), nullable=False),
    Column("brand", String(16), nullable=False),
    Column("exp_month", SmallInteger, nullable=False),
    Column("exp_year", SmallInteger, nullable=False),
    Column("data_key_ciphertext", LargeBinary, nullable=False),
    Column("card_ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("owner", "fingerprint"),
    **BINARY_TEXT,
)

__all__ = ["card_tokens"]
