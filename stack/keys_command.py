"""`paygate keys create|list|set-limits|rotate|revoke` (docs/security.md, "Key lifecycle"; README, "API keys").

Every change is announced through Redis (the keys' generation counter), so running gateways apply it on their next
call; without Redis they pick it up within `key_cache_ttl_s`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta
from typing import Any

from gateway.key_limits import KeyLimits, describe_rate, effective, parse_changes
from gateway.keystore import ApiKey, KeyStore, KeyWithSecret, announce_key_change, load_master_key
from runtime import audit, db
from runtime.settings import Settings

MAX_GRACE_HOURS = 24 * 30


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.upgrade(database)  # a key can be created before the first `serve`
        store = KeyStore(database, load_master_key(settings, create=True))
        audit.enable(database, audit.chain_key(settings))
        try:
            return _COMMANDS[args.keys_command](args, settings, store)
        except ValueError as error:
            print(f"paygate: {error}", file=sys.stderr)
            return 2
    finally:
        database.dispose()


def _changes(args: argparse.Namespace) -> dict[str, float | int | None]:
    return parse_changes(
        rate=args.rate,
        burst=args.burst,
        user_rate=args.user_rate,
        user_burst=args.user_burst,
        max_concurrent=args.max_concurrent,
    )


def _create(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    created = store.create(args.name, args.scopes, KeyLimits(**_changes(args)), actor=audit.cli_actor())  # type: ignore[arg-type]
    _announce(settings)
    _print_secret(args, settings, created, "created")
    return 0


def _rotate(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    if not 0 <= args.grace_hours <= MAX_GRACE_HOURS:
        raise ValueError(f"--grace-hours must be between 0 and {MAX_GRACE_HOURS}, got {args.grace_hours:g}")
    rotated = store.rotate(args.key_id, timedelta(hours=args.grace_hours), actor=audit.cli_actor())
    if rotated is None:
        print(f"paygate: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    _announce(settings)
    _print_secret(args, settings, rotated, "rotated")
    return 0


def _set_limits(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    if not store.set_limits(args.key_id, _changes(args), actor=audit.cli_actor()):
        print(f"paygate: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    _announce(settings)
    found = store.lookup(args.key_id)
    assert found is not None
    print(json.dumps(_described(found.key, settings)) if args.json else _line(found.key, settings))
    return 0


def _revoke(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    if not store.revoke(args.key_id, actor=audit.cli_actor()):
        print(f"paygate: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    _announce(settings)
    print(f"revoked {args.key_id}")
    return 0


def _list(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    keys = store.list()
    if args.json:
        print(json.dumps({"keys": [_described(k, settings) for k in keys]}))
    else:
        for k in keys:
            print(_line(k, settings))
    return 0


def _print_secret(args: argparse.Namespace, settings: Settings, made: KeyWithSecret, what: str) -> None:
    key = made.key
    if args.json:
        print(json.dumps({**_described(key, settings), "secret": made.secret}))
        return
    print(f"key_id: {key.key_id}")
    print(f"secret: {made.secret}")
    print(f"name:   {key.owner}")
    print(f"scopes: {','.join(key.scopes)}")
    if key.previous_secret_expires_at is not None and what == "rotated":
        print(f"the previous secret verifies until {key.previous_secret_expires_at.isoformat()}")
    print(f"The {what} secret is shown only now; store it in your secret manager.", file=sys.stderr)


def _described(key: ApiKey, settings: Settings) -> dict[str, Any]:
    """A key as `keys list --json` shows it: its own limits (null: the stack default) and what applies."""
    applied = effective(key.limits, settings)

    def moment(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "key_id": key.key_id,
        "name": key.owner,
        "scopes": list(key.scopes),
        "created_at": moment(key.created_at),
        "revoked_at": moment(key.revoked_at),
        "last_used_at": moment(key.last_used_at),
        "previous_secret_expires_at": moment(key.previous_secret_expires_at),
        "limits": {name: getattr(key.limits, name) for name in KeyLimits.column_names()},
        "effective_limits": {name: getattr(applied, name) for name in KeyLimits.column_names()},
    }


def _line(key: ApiKey, settings: Settings) -> str:
    applied = effective(key.limits, settings)
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    used = f"{key.last_used_at:%Y-%m-%d %H:%M:%S}" if key.last_used_at else "never"
    concurrent = applied.max_concurrent_calls or "no limit"
    limits = (
        f"rate {describe_rate(applied.rate_per_s)} burst {applied.burst}; "
        f"per user {describe_rate(applied.user_rate_per_s)} burst {applied.user_burst}; concurrent {concurrent}"
    )
    return f"{key.key_id}  {key.owner:<24} {','.join(key.scopes):<40} {state:<24} last used {used}  {limits}"


def _announce(settings: Settings) -> None:
    """Nudge running gateways (if any) so a change applies on their next call."""
    from stack.commands import running_stack_redis  # noqa: PLC0415 - stack.commands imports this module

    url = running_stack_redis(settings).redis_url.reveal()
    if url and not announce_key_change(url, settings.redis_prefix):
        logging.getLogger(__name__).info(
            "no running gateway reachable through Redis; gateways pick the change up within %s s",
            settings.key_cache_ttl_s,
        )


_COMMANDS = {
    "create": _create,
    "list": _list,
    "set-limits": _set_limits,
    "rotate": _rotate,
    "revoke": _revoke,
}
