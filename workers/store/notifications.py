"""Rows of provider callbacks (docs/channels.md, "Notifications"): stored as received, then given a verdict.

Not owner-scoped: a callback belongs to no caller until it is verified and matched to an attempt, and no
caller's RPC reads these rows (operators do, through the database and the metrics).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from runtime.schema import channel_notifications
from workers.store.moments import utc

MAX_BODY_BYTES = 64 * 1024  # no provider's callback comes near this; anything larger is refused at the edge

_INSERT = channel_notifications.insert()
_BY_ID = select(channel_notifications).where(channel_notifications.c.notification_id == bindparam("notification_id"))
_VERDICT = (
    update(channel_notifications)
    .where(channel_notifications.c.notification_id == bindparam("target_id"))
    .values(
        verdict=bindparam("verdict"),
        reason=bindparam("reason"),
        attempt_id=bindparam("attempt_id"),
        processed_at=bindparam("now"),
    )
)


@dataclass(frozen=True)
class Received:
    notification_id: int
    channel: str
    received_at: datetime
    headers: dict[str, str]
    body: bytes
    verdict: str


def insert_received(
    connection: Connection, channel: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> int:
    result = connection.execute(
        _INSERT,
        {
            "channel": channel,
            "received_at": now,
            "headers": json.dumps({k.lower(): v for k, v in headers.items()}, sort_keys=True).encode(),
            "body": body,
            "verdict": "received",
            "reason": "",
            "attempt_id": None,
            "processed_at": None,
        },
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def load(connection: Connection, notification_id: int) -> Received | None:
    row = connection.execute(_BY_ID, {"notification_id": notification_id}).first()
    if row is None:
        return None
    received_at = utc(row.received_at)
    return Received(
        notification_id=row.notification_id,
        channel=row.channel,
        received_at=received_at,
        headers=json.loads(row.headers),
        body=bytes(row.body),
        verdict=row.verdict,
    )


def record_verdict(
    connection: Connection, notification_id: int, verdict: str, reason: str, attempt_id: str | None, now: datetime
) -> None:
    connection.execute(
        _VERDICT,
        {"target_id": notification_id, "verdict": verdict, "reason": reason[:64], "attempt_id": attempt_id, "now": now},
    )
