"""`paygate webhooks redeliver EVENT_ID` (docs/events.md, "Webhooks"): send one event again, now.

For an event that was dead-lettered, or that a receiver lost after answering 2xx. It goes to every live endpoint of
its owner that wants its type (or to the one named), signed as usual, outside the relay's order: receivers
deduplicate by event id anyway. A dead letter it fixes is marked redelivered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from runtime.db import Database
from runtime.errors import NotFound
from workers.store import events as event_rows
from workers.store import webhooks as rows
from workers.webhooks import delivery
from workers.webhooks.endpoints import Endpoints


def redeliver(
    database: Database,
    endpoints: Endpoints,
    event_id: str,
    *,
    endpoint_id: str = "",
    clock: Callable[[], datetime],
    read_timeout_s: float = 5.0,
) -> list[tuple[str, delivery.Attempt]]:
    """Each targeted endpoint with the outcome of its attempt."""
    with database.read() as connection:
        event = event_rows.any_owner_event(connection, event_id)
        if event is None:
            raise NotFound(f"no event {event_id}")
        live = rows.endpoints_of(connection, event.owner)
        if endpoint_id:
            targets = [e for e in live if e.endpoint_id == endpoint_id]
        else:
            targets = [e for e in live if not e.types or event.type in e.types]
    if endpoint_id and not targets:
        raise NotFound(f"no live webhook endpoint {endpoint_id} of the event's owner")
    body = delivery.body_of(event.payload)
    outcomes = []
    with delivery.http_client(2.0, read_timeout_s) as client:
        for endpoint in targets:
            now = clock()
            attempt = delivery.deliver(
                client, endpoint.url, endpoints.signing_secrets(endpoint, now), event_id, event.type, body
            )
            if attempt.ok:
                with database.write() as connection:
                    rows.relay_redelivered(connection, endpoint.endpoint_id, event_id, now)
            outcomes.append((endpoint.endpoint_id, attempt))
    return outcomes
