"""The write side of the transactional outbox (docs/events.md, "The outbox").

Code that changes state adds its events to the transaction it runs in (`add`); `Database.write()` writes them as
the transaction's last statements (`flush`), just before the commit. Each event gets the next number of one
sequence row, `event_sequence`, and taking the numbers is an UPDATE of that row: its lock is held until the commit,
so the next transaction that writes events waits for this one to commit before it numbers its own. Numbers are
therefore given in commit order and without gaps (a transaction that rolls back gives its numbers back with its
update), and what any reader sees of the events table is always a prefix of the sequence: a reader that has seen
number N and later sees N + 1 has missed nothing. Taking the numbers last keeps that wait to the commit itself.

An event exists exactly when its change committed; nothing here knows what an event says (workers/events/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from runtime.schema import event_sequence, events

_PENDING = "paygate.outbox"  # the transaction's events, in Connection.info until the flush
_STREAM = "events"
_TAKE = (
    update(event_sequence)
    .where(event_sequence.c.name == _STREAM)
    .values(last_seq=event_sequence.c.last_seq + bindparam("count"))
)
_LAST = select(event_sequence.c.last_seq).where(event_sequence.c.name == _STREAM)
_INSERT = events.insert()


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    owner: str
    type: str
    created_at: datetime
    payload: bytes


# An event whose content is read at the flush, so that it shows the resource as the whole transaction leaves it.
Deferred = Callable[[Connection], NewEvent]


class OutsideTransaction(RuntimeError):
    """An event was added outside `Database.write()`: it would never be written (a bug, never a caller's fault)."""


def open_buffer(connection: Connection) -> None:
    """Start the transaction's list of events (Database.write)."""
    connection.info[_PENDING] = []


def discard(connection: Connection) -> None:
    """The transaction ended without its flush (it rolled back): its events go with it."""
    connection.info.pop(_PENDING, None)


def add(connection: Connection, event: NewEvent | Deferred) -> None:
    pending: list[NewEvent | Deferred] | None = connection.info.get(_PENDING)
    if pending is None:
        raise OutsideTransaction("an event was added outside Database.write(); it would be lost")
    pending.append(event)


def flush(connection: Connection) -> int | None:
    """Number and insert the transaction's events, in the order they were added; the highest number, or None
    when there were none."""
    added: list[NewEvent | Deferred] = connection.info.pop(_PENDING, None) or []
    if not added:
        return None
    pending = [event if isinstance(event, NewEvent) else event(connection) for event in added]
    connection.execute(_TAKE, {"count": len(pending)})
    last: int = connection.execute(_LAST).scalar_one()
    first = last - len(pending) + 1
    connection.execute(
        _INSERT,
        [
            {
                "seq": first + offset,
                "event_id": event.event_id,
                "owner": event.owner,
                "type": event.type,
                "created_at": event.created_at,
                "payload": event.payload,
            }
            for offset, event in enumerate(pending)
        ],
    )
    return last
