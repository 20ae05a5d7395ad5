"""The `paygate` command: serve the stack, run one gateway or worker, manage API keys, migrate the database."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from google.protobuf.json_format import MessageToJson

from runtime import logs
from runtime.errors import ConfigurationError, PaygateError
from runtime.settings import Settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default ./.paygate, env PAYGATE_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate", description="Paygate payment gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the whole stack: gateway, workers, embedded Redis and SQLite")
    _common(serve)
    serve.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    serve.add_argument("--listen", help="gateway address HOST:PORT (default 127.0.0.1:50051)")
    serve.add_argument("--metrics-listen", help="/metrics address HOST:PORT (default 127.0.0.1:9464)")

    gateway = commands.add_parser("gateway", help="run one gateway process in front of existing workers")
    _common(gateway)
    gateway.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    gateway.add_argument(
        "--worker-addresses",
        required=True,
        help="comma-separated worker addresses: HOST:PORT, unix:PATH, or dns:HOST:PORT (one entry per A record)",
    )
    gateway.add_argument("--metrics-listen", help="serve this process's own /metrics on HOST:PORT")

    worker = commands.add_parser("worker", help="run one worker process")
    _common(worker)
    worker.add_argument("--worker-id", default=os.environ.get("HOSTNAME", "worker"), help="id in x-paygate-worker")
    worker.add_argument("--listen", required=True, help="HOST:PORT or unix:PATH")
    worker.add_argument("--metrics-listen", help="serve this process's own /metrics on HOST:PORT")

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret (shown only once)")
    _common(create)
    create.add_argument("--name", required=True, help="the calling service; order ids are scoped to it")
    create.add_argument("--scopes", default="*", help="comma-separated scopes (default *: every method)")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    revoke = key_commands.add_parser("revoke", help="revoke a key; running gateways stop accepting it")
    _common(revoke)
    revoke.add_argument("key_id")

    ledger = commands.add_parser("ledger", help="the double-entry ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_commands.add_parser("verify", help="check every ledger invariant; exit 1 on any breach")
    _common(verify)

    sandbox = commands.add_parser("sandbox", help="the SANDBOX payment channel")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    confirm = sandbox_commands.add_parser(
        "confirm",
        help="deliver the channel's confirmation of a PENDING payment (PAYGATE_SANDBOX_CONFIRMATION=deferred)",
    )
    _common(confirm)
    confirm.add_argument("payment_id")

    database = commands.add_parser("db", help="database schema")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations up to the newest schema")
    _common(upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(
            data_dir=getattr(args, "data_dir", None),
            workers=getattr(args, "workers", None),
            listen=getattr(args, "listen", None) if args.command in {"serve", "gateway"} else None,
            metrics_listen=getattr(args, "metrics_listen", None) if args.command == "serve" else None,
        )
        logs.configure(_process_name(args), settings.log_level)
        return _dispatch(args, settings)
    except ConfigurationError as error:
        print(f"paygate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _process_name(args: argparse.Namespace) -> str:
    if args.command == "worker":
        return str(args.worker_id)
    return str(args.command)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        from stack.supervisor import Supervisor  # noqa: PLC0415 - each command imports only what it runs

        return Supervisor(settings).run()
    if args.command == "gateway":
        from gateway.server import run_gateway  # noqa: PLC0415

        addresses = [a.strip() for a in args.worker_addresses.split(",") if a.strip()]
        asyncio.run(run_gateway(settings, addresses, args.metrics_listen))
        return 0
    if args.command == "worker":
        from workers.server import run_worker  # noqa: PLC0415

        asyncio.run(run_worker(settings, args.worker_id, args.listen, args.metrics_listen))
        return 0
    if args.command == "keys":
        return _keys(args, settings)
    if args.command == "ledger":
        from runtime import db  # noqa: PLC0415
        from workers.ledger.verify import verify  # noqa: PLC0415

        database = db.Database(settings.effective_database_url(), pool_size=1)
        try:
            db.require_current_schema(database)
            report = verify(database)
        finally:
            database.dispose()
        print(report.render())
        return 0 if report.ok else 1
    if args.command == "sandbox":
        from runtime import db  # noqa: PLC0415
        from workers.codec.encode import payment as encode_payment  # noqa: PLC0415
        from workers.wiring import build_service  # noqa: PLC0415

        settings = _running_stack_redis(settings)
        database = db.Database(settings.effective_database_url(), pool_size=1)
        try:
            db.require_current_schema(database)
            confirmed = build_service(settings, database, metrics=None).confirm_payment(args.payment_id)
        except PaygateError as error:
            print(f"paygate: {error.message}", file=sys.stderr)
            return 1
        finally:
            database.dispose()
        print(MessageToJson(encode_payment(confirmed), preserving_proto_field_name=True, indent=None))
        return 0
    if args.command == "db":
        from runtime import db  # noqa: PLC0415

        database = db.Database(settings.effective_database_url(), pool_size=1)
        try:
            db.upgrade(database)
            print(f"schema at revision {db.current_revision(database)}")
        finally:
            database.dispose()
        return 0
    raise AssertionError(args.command)


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keystore import KeyStore, announce_key_change, load_master_key  # noqa: PLC0415
    from runtime import db  # noqa: PLC0415

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.upgrade(database)  # a key can be created before the first `serve`
        store = KeyStore(database, load_master_key(settings, create=True))
        if args.keys_command == "create":
            try:
                created = store.create(args.name, args.scopes)
            except ValueError as error:
                print(f"paygate: {error}", file=sys.stderr)
                return 2
            _announce(settings, announce_key_change)
            if args.json:
                print(
                    json.dumps(
                        {
                            "key_id": created.key.key_id,
                            "secret": created.secret,
                            "name": created.key.owner,
                            "scopes": list(created.key.scopes),
                        }
                    )
                )
            else:
                print(f"key_id: {created.key.key_id}")
                print(f"secret: {created.secret}")
                print(f"name:   {created.key.owner}")
                print(f"scopes: {','.join(created.key.scopes)}")
                print("The secret is shown only now; store it in your secret manager.", file=sys.stderr)
            return 0
        if args.keys_command == "list":
            keys = store.list()
            if args.json:
                print(
                    json.dumps(
                        {
                            "keys": [
                                {
                                    "key_id": k.key_id,
                                    "name": k.owner,
                                    "scopes": list(k.scopes),
                                    "created_at": k.created_at.isoformat(),
                                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                                }
                                for k in keys
                            ]
                        }
                    )
                )
            else:
                for k in keys:
                    state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                    print(f"{k.key_id}  {k.owner:<24} {','.join(k.scopes):<40} {state}")
            return 0
        if args.keys_command == "revoke":
            if not store.revoke(args.key_id):
                print(f"paygate: no active key {args.key_id!r}", file=sys.stderr)
                return 1
            _announce(settings, announce_key_change)
            print(f"revoked {args.key_id}")
            return 0
    finally:
        database.dispose()
    raise AssertionError(args.keys_command)


def _running_stack_redis(settings: Settings) -> Settings:
    """The Redis of the `serve` stack using this data dir, when no PAYGATE_REDIS_URL names one."""
    marker = settings.run_dir / "redis.url"
    if not settings.redis_url and marker.exists():
        return settings.replace(redis_url=marker.read_text().strip())
    return settings


def _announce(settings: Settings, announce: Callable[[str, str], bool]) -> None:
    """Nudge running gateways (if any) so a change applies on their next call."""
    url = settings.redis_url
    marker = settings.run_dir / "redis.url"
    if not url and marker.exists():
        url = marker.read_text().strip()
    if url and not announce(url, settings.redis_prefix):
        logging.getLogger(__name__).info(
            "no running gateway reachable through Redis; gateways pick the change up within %s s",
            settings.key_cache_ttl_s,
        )
