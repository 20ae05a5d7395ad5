"""The audit trail's tables (docs/audit.md), on runtime/schema.py's MetaData; import them from there.

Only runtime/audit.py appends to them and only its readers read them (a layout test checks it): the trail is the
operator's record of who did what, not any owner's data, so it is not owner-scoped.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table, Text

from runtime.schema_base import BINARY_TEXT, metadata

HASH_LENGTH = 64  # hex of an HMAC-SHA256
ACTOR_LENGTH = 80
ACTION_LENGTH = 64
SUBJECT_LENGTH = 128
RECORDED_AT_LENGTH = 27  # 2026-11-28T20:00:57.123456Z: the exact text that is hashed

# One row per audited action, numbered without gaps. Each row carries the hash of the one before it
# (`prev_hash`), and its own hash covers every other column of the row (docs/audit.md, "The hash"). Times are
# stored as the fixed-precision UTC text that is hashed, because MySQL's DATETIME drops the fraction.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),  # of the hash encoding
    Column("recorded_at", String(RECORDED_AT_LENGTH), nullable=False, index=True),
    Column("actor", String(ACTOR_LENGTH), nullable=False),
    Column("action", String(ACTION_LENGTH), nullable=False),
    Column("subject", String(SUBJECT_LENGTH), nullable=False),
    Column("details", Text, nullable=False),  # canonical JSON (ASCII), at most 2,048 characters
    Column("key_id", String(16), nullable=False),  # which chain key made `entry_hash` (its fingerprint)
    Column("prev_hash", String(HASH_LENGTH), nullable=False),
    Column("entry_hash", String(HASH_LENGTH), nullable=False),
    **BINARY_TEXT,
)

# The chain's head: the last row's number and hash. Appenders lock this one row (SELECT … FOR UPDATE; on SQLite
# the single writer) for the rest of their transaction, so two rows can never share a predecessor, and a deleted
# newest row leaves the head pointing past the end of the table.
audit_head = Table(
    "audit_head",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(HASH_LENGTH), nullable=False),
    **BINARY_TEXT,
)
