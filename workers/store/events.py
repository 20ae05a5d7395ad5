"""Reading the outbox (docs/events.md): an owner's events in commit order, from a cursor on.

Every lookup is scoped by owner, like every other caller-facing table (workers/store/records.py). The numbers
are runtime/outbox.py's: what a reader sees is always a prefix of them, so "after N" misses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from runtime.schema import event_sequence, events
from workers.store.moments import utc

_COLUMNS = (events.c.seq, events.c.event_id, events.c.owner, events.c.type, events.c.created_at, events.c.payload)
_AFTER = (
    select(*_COLUMNS)
    .where(events.c.owner == bindparam("owner"), events.c.seq > bindparam("after_seq"))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)
_AFTER_OF_TYPES = (
    select(*_COLUMNS)
    .where(
        events.c.owner == bindparam("owner"),
        events.c.seq > bindparam("after_seq"),
        events.c.type.in_(bindparam("types", expanding=True)),
    )
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)
_ANY_OWNER_BY_ID = select(*_COLUMNS).where(events.c.event_id == bindparam("event_id"))
_SEQ_OF = select(events.c.seq).where(events.c.owner == bindparam("owner"), events.c.event_id == bindparam("event_id"))
_LAST = select(event_sequence.c.last_seq).where(event_sequence.c.name == "events")


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event_id: str
    owner: str
    type: str
    created_at: datetime
    payload: bytes  # a serialized paygate.v1.Event


def after(
    connection: Connection, owner: str, after_seq: int, *, types: frozenset[str] = frozenset(), limit: int
) -> list[StoredEvent]:
    """The owner's events numbered above `after_seq`, oldest first, at most `limit`; only `types` if given."""
    if not owner:
        raise ValueError("owner-scoped access needs the caller's owner")
    values = {"owner": owner, "after_seq": after_seq, "limit": limit}
    statement = _AFTER_OF_TYPES if types else _AFTER
    if types:
        values["types"] = sorted(types)
    return [_event(row) for row in connection.execute(statement, values)]


def any_owner_event(connection: Connection, event_id: str) -> StoredEvent | None:
    """Unscoped, for the operator's `paygate webhooks redeliver`: whichever owner's event this is."""
    row = connection.execute(_ANY_OWNER_BY_ID, {"event_id": event_id}).first()
    return None if row is None else _event(row)


def _event(row: Any) -> StoredEvent:
    return StoredEvent(row.seq, row.event_id, row.owner, row.type, utc(row.created_at), row.payload)


def seq_of(connection: Connection, owner: str, event_id: str) -> int | None:
    """The number of the owner's event `event_id` (a stream's cursor); None when the owner has no such event."""
    if not owner:
        raise ValueError("owner-scoped access needs the caller's owner")
    found: int | None = connection.execute(_SEQ_OF, {"owner": owner, "event_id": event_id}).scalar_one_or_none()
    return found


def last_seq(connection: Connection) -> int:
    """The highest number given so far, of every owner's events (0 before the first)."""
    value: int = connection.execute(_LAST).scalar_one()
    return value
