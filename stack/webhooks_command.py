"""`paygate webhooks …` (docs/events.md, "Webhooks"): endpoints per owner, dead letters, redelivery."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime import audit, db
from runtime.errors import PaygateError
from runtime.settings import Settings
from workers.store import webhooks as rows
from workers.store.webhooks import Endpoint
from workers.webhooks.endpoints import Endpoints
from workers.webhooks.redeliver import redeliver
from workers.wiring import webhook_endpoints


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.upgrade(database)
        endpoints = webhook_endpoints(settings, database)
        result = _ACTIONS[args.webhooks_command](args, database, endpoints)
    except (PaygateError, ValueError) as error:
        print(f"paygate: {error}", file=sys.stderr)
        return 2
    finally:
        database.dispose()
    _print(result, args.json)
    return 1 if result.get("failed") else 0


def _add(args: argparse.Namespace, database: db.Database, endpoints: Endpoints) -> dict[str, Any]:
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    made = endpoints.add(args.owner, args.url, types, _now(), actor=audit.cli_actor())
    return {**_shown(made.endpoint), "secret": made.secret}


def _list(args: argparse.Namespace, database: db.Database, endpoints: Endpoints) -> dict[str, Any]:
    return {"endpoints": [_shown(e) for e in endpoints.of_owner(args.owner)]}


def _remove(args: argparse.Namespace, database: db.Database, endpoints: Endpoints) -> dict[str, Any]:
    endpoints.remove(args.owner, args.endpoint_id, _now(), actor=audit.cli_actor())
    return {"removed": args.endpoint_id}


def _rotate(args: argparse.Namespace, database: db.Database, endpoints: Endpoints) -> dict[str, Any]:
    if not 0 <= args.overlap_hours <= 24 * 30:
        raise ValueError("--overlap-hours must be between 0 and 720")
    now = _now()
    overlap = timedelta(hours=args.overlap_hours)
    made = endpoints.rotate(args.owner, args.endpoint_id, now, overlap, actor=audit.cli_actor())
    expires = now + timedelta(hours=args.overlap_hours)
    return {"endpoint_id": made.endpoint.endpoint_id, "secret": made.secret, "previous_expires_at": expires.isoformat()}


def _dead(args: argparse.Namespace, database: db.Database, endpoints: Endpoints) -> dict[str, Any]:
    with database.read() as connection:
        letters = rows.dead_letters_of(connection, args.owner)
    return {
        "dead_letters": [
            {
                "endpoint_id": d.endpoint_id,
                "event_id": d.event_id,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "dead_at": d.created_at.isoformat(),
                "redelivered_at": d.redelivered_at.isoformat() if d.redelivered_at else None,
            }
            for d in letters
        ]
    }


def _redeliver(args: argparse.Namespace, database: db.Database, endpoints: Endpoints) -> dict[str, Any]:
    outcomes = redeliver(database, endpoints, args.event_id, endpoint_id=args.endpoint, clock=_now)
    return {
        "event_id": args.event_id,
        "deliveries": [{"endpoint_id": e, "outcome": a.outcome, "detail": a.detail} for e, a in outcomes],
        "failed": sum(not a.ok for _, a in outcomes),
    }


_ACTIONS = {
    "add": _add,
    "list": _list,
    "remove": _remove,
    "rotate-secret": _rotate,
    "dead-letters": _dead,
    "redeliver": _redeliver,
}


def _shown(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint.endpoint_id,
        "owner": endpoint.owner,
        "url": endpoint.url,
        "types": sorted(endpoint.types),
        "created_at": endpoint.created_at.isoformat(),
        "failing_attempts": endpoint.attempts,
        "next_attempt_at": endpoint.next_attempt_at.isoformat() if endpoint.next_attempt_at else None,
        "last_error": endpoint.last_error,
    }


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, list | dict) else value}")
    if "secret" in result:
        print("The secret is shown only now; give it to the receiver's secret store.", file=sys.stderr)


def _now() -> datetime:
    return datetime.now(UTC)
