"""Rows of webhook endpoints and dead letters (docs/events.md, "Webhooks").

What a caller or an operator asks about an owner's endpoints is scoped by owner, like every owned table. The relay
delivers every owner's events, so its statements are unscoped and say so in their names (`relay_*`); each of its
writes is guarded by the cursor it read, so two relays (one whose lease lapsed) can repeat a delivery but never
move an endpoint back or skip an event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from runtime.schema import webhook_dead_letters, webhook_endpoints
from workers.domain.webhooks import DeadLetter, Endpoint
from workers.store import events as event_rows
from workers.store.moments import utc, utc_or_none

__all__ = ["DeadLetter", "Endpoint"]  # the records live in the domain; callers may import them here

_LIVE = webhook_endpoints.c.removed_at.is_(None)
_OF_OWNER = select(webhook_endpoints).where(webhook_endpoints.c.owner == bindparam("owner"), _LIVE)
_BY_ID = _OF_OWNER.where(webhook_endpoints.c.endpoint_id == bindparam("endpoint_id"))
_REMOVE = (
    update(webhook_endpoints)
    .where(
        webhook_endpoints.c.owner == bindparam("target_owner"),
        webhook_endpoints.c.endpoint_id == bindparam("target"),
        _LIVE,
    )
    .values(removed_at=bindparam("now"))
)
_ROTATE = (
    update(webhook_endpoints)
    .where(
        webhook_endpoints.c.owner == bindparam("target_owner"),
        webhook_endpoints.c.endpoint_id == bindparam("target"),
        _LIVE,
    )
    .values(
        secret_ciphertext=bindparam("new_secret"),
        previous_secret_ciphertext=bindparam("new_previous"),
        previous_expires_at=bindparam("new_previous_expires_at"),
    )
)
_RELAY_ENDPOINTS = select(webhook_endpoints).where(_LIVE).order_by(webhook_endpoints.c.endpoint_id)
_ADVANCE = (
    update(webhook_endpoints)
    .where(
        webhook_endpoints.c.endpoint_id == bindparam("target"), webhook_endpoints.c.cursor_seq == bindparam("expected")
    )
    .values(cursor_seq=bindparam("new_cursor"), attempts=0, next_attempt_at=None, last_error="")
)
_FAILED = (
    update(webhook_endpoints)
    .where(
        webhook_endpoints.c.endpoint_id == bindparam("target"), webhook_endpoints.c.cursor_seq == bindparam("expected")
    )
    .values(attempts=bindparam("new_attempts"), next_attempt_at=bindparam("retry_at"), last_error=bindparam("error"))
)
_DEAD_OF_OWNER = (
    select(webhook_dead_letters)
    .where(webhook_dead_letters.c.owner == bindparam("owner"))
    .order_by(webhook_dead_letters.c.created_at)
)
_REDELIVERED = (
    update(webhook_dead_letters)
    .where(
        webhook_dead_letters.c.endpoint_id == bindparam("target"),
        webhook_dead_letters.c.event_id == bindparam("dead_event_id"),
    )
    .values(redelivered_at=bindparam("now"))
)
ERROR_LENGTH = 256


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        endpoint_id=row.endpoint_id,
        owner=row.owner,
        url=row.url,
        types=frozenset(t for t in row.types.split(",") if t),
        secret_ciphertext=row.secret_ciphertext,
        previous_secret_ciphertext=row.previous_secret_ciphertext,
        previous_expires_at=utc_or_none(row.previous_expires_at),
        created_at=utc(row.created_at),
        cursor_seq=row.cursor_seq,
        attempts=row.attempts,
        next_attempt_at=utc_or_none(row.next_attempt_at),
        last_error=row.last_error,
    )


def insert_endpoint(connection: Connection, endpoint: Endpoint) -> None:
    connection.execute(
        webhook_endpoints.insert(),
        {
            "endpoint_id": endpoint.endpoint_id,
            "owner": endpoint.owner,
            "url": endpoint.url,
            "types": ",".join(sorted(endpoint.types)),
            "secret_ciphertext": endpoint.secret_ciphertext,
            "previous_secret_ciphertext": None,
            "previous_expires_at": None,
            "created_at": endpoint.created_at,
            "removed_at": None,
            "cursor_seq": endpoint.cursor_seq,
            "attempts": 0,
            "next_attempt_at": None,
            "last_error": "",
        },
    )


def endpoints_of(connection: Connection, owner: str) -> list[Endpoint]:
    _require(owner)
    return [
        _endpoint(row)
        for row in connection.execute(_OF_OWNER.order_by(webhook_endpoints.c.created_at), {"owner": owner})
    ]


def endpoint_by_id(connection: Connection, owner: str, endpoint_id: str) -> Endpoint | None:
    _require(owner)
    row = connection.execute(_BY_ID, {"owner": owner, "endpoint_id": endpoint_id}).first()
    return None if row is None else _endpoint(row)


def remove(connection: Connection, owner: str, endpoint_id: str, now: datetime) -> bool:
    _require(owner)
    values = {"target_owner": owner, "target": endpoint_id, "now": now}
    return bool(connection.execute(_REMOVE, values).rowcount == 1)


def rotate(
    connection: Connection, owner: str, endpoint_id: str, secret: bytes, previous: bytes, previous_expires_at: datetime
) -> bool:
    _require(owner)
    values = {
        "target_owner": owner,
        "target": endpoint_id,
        "new_secret": secret,
        "new_previous": previous,
        "new_previous_expires_at": previous_expires_at,
    }
    return bool(connection.execute(_ROTATE, values).rowcount == 1)


def dead_letters_of(connection: Connection, owner: str) -> list[DeadLetter]:
    _require(owner)
    return [_dead(row) for row in connection.execute(_DEAD_OF_OWNER, {"owner": owner})]


# -- the relay (unscoped: it delivers every owner's events) ---------------------------------------------------


def relay_endpoints(connection: Connection) -> list[Endpoint]:
    return [_endpoint(row) for row in connection.execute(_RELAY_ENDPOINTS)]


def relay_next_event(connection: Connection, endpoint: Endpoint) -> event_rows.StoredEvent | None:
    """The first event after the endpoint's cursor that it wants."""
    found = event_rows.after(connection, endpoint.owner, endpoint.cursor_seq, types=endpoint.types, limit=1)
    return found[0] if found else None


def relay_advance(connection: Connection, endpoint: Endpoint, new_cursor: int) -> bool:
    values = {"target": endpoint.endpoint_id, "expected": endpoint.cursor_seq, "new_cursor": new_cursor}
    return bool(connection.execute(_ADVANCE, values).rowcount == 1)


def relay_failed(
    connection: Connection, endpoint: Endpoint, attempts: int, next_attempt_at: datetime, error: str
) -> bool:
    values = {
        "target": endpoint.endpoint_id,
        "expected": endpoint.cursor_seq,
        "new_attempts": attempts,
        "retry_at": next_attempt_at,
        "error": error[:ERROR_LENGTH],
    }
    return bool(connection.execute(_FAILED, values).rowcount == 1)


def relay_dead_letter(connection: Connection, letter: DeadLetter) -> None:
    values = {**letter.__dict__, "last_error": letter.last_error[:ERROR_LENGTH]}
    connection.execute(webhook_dead_letters.insert(), values)


def relay_redelivered(connection: Connection, endpoint_id: str, event_id: str, now: datetime) -> None:
    connection.execute(_REDELIVERED, {"target": endpoint_id, "dead_event_id": event_id, "now": now})


def _dead(row: Any) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=row.dead_letter_id,
        endpoint_id=row.endpoint_id,
        owner=row.owner,
        event_id=row.event_id,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=utc(row.created_at),
        redelivered_at=utc_or_none(row.redelivered_at),
    )


def _require(owner: str) -> None:
    if not owner:
        raise ValueError("owner-scoped access needs the owner")
