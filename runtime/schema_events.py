"""The tables of events and webhooks (docs/events.md), on runtime/schema.py's MetaData; import them from there."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Table

from runtime.schema_base import BINARY_TEXT, ID_LENGTH, NAME_LENGTH, metadata

# -- events (docs/events.md) -----------------------------------------------------------------------------------
# The transactional outbox: one row per state change, written in the change's own transaction. `seq` is the
# commit order of every owner's events together, without gaps: a writing transaction takes its numbers from the
# one row of event_sequence as its last statement, so the row's lock orders the commits (runtime/outbox.py).
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(ID_LENGTH), nullable=False, unique=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("type", String(40), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The serialized paygate.v1.Event.
    Column("payload", LargeBinary, nullable=False),
    Index(None, "owner", "seq"),
    **BINARY_TEXT,
)

event_sequence = Table(
    "event_sequence",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    **BINARY_TEXT,
)


# -- webhooks (docs/events.md, "Webhooks") ----------------------------------------------------------------------
# An endpoint receives its owner's events of the types it wants, one at a time in commit order: `cursor_seq` is
# the last event number it has had (delivered, not wanted, or given up on), and the next one is retried on a
# schedule while it fails (`attempts`, `next_attempt_at`). Secrets are sealed by the master key ring;
# during a rotation the previous secret signs too, until `previous_expires_at`.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", String(ID_LENGTH), primary_key=True),
    Column("owner", String(NAME_LENGTH), nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    Column("types", String(1024), nullable=False),  # EventType names, comma-separated; "" for every type
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("previous_secret_ciphertext", LargeBinary, nullable=True),
    Column("previous_expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("removed_at", DateTime(timezone=True), nullable=True),
    Column("cursor_seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", String(256), nullable=False),
    **BINARY_TEXT,
)

# The events an endpoint never accepted within the retry schedule; `paygate webhooks redeliver` sends one again.
webhook_dead_letters = Table(
    "webhook_dead_letters",
    metadata,
    Column("dead_letter_id", String(ID_LENGTH), primary_key=True),
    Column("endpoint_id", String(ID_LENGTH), ForeignKey("webhook_endpoints.endpoint_id"), nullable=False, index=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("event_id", String(ID_LENGTH), nullable=False, index=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("redelivered_at", DateTime(timezone=True), nullable=True),
    **BINARY_TEXT,
)
