"""The `paygate` commands other than parsing: each imports only what it runs (a worker never loads the gateway)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToJson

from runtime import logs
from runtime.errors import ConfigurationError, PaygateError
from runtime.settings import Settings


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from stack.supervisor import Supervisor  # noqa: PLC0415 - each command imports only what it runs

    return Supervisor(settings, plaintext=args.plaintext).run()


def certs(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate certs dev` (stack/dev_certs.py): 0 made or reused, 2 refused in production mode."""
    if settings.mode == "production":
        print("paygate: `certs dev` makes a dev CA; production uses certificates from your own PKI", file=sys.stderr)
        return 2
    from stack.dev_certs import ensure_dev_certs, usage_text  # noqa: PLC0415

    hosts = [host for entry in args.hosts for host in entry.split(",")]
    made, written = ensure_dev_certs(settings.data_dir, hosts)
    print(f"made: {', '.join(written)}" if written else "reused every certificate (none near expiry)")
    print(usage_text(made, settings.listen))
    return 0


def gateway(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.server import run_gateway  # noqa: PLC0415

    addresses = _worker_addresses(args.worker_addresses)
    # One access line per call: the event loop queues it, a thread writes it (runtime/logs.py).
    writer = logs.write_behind()
    try:
        asyncio.run(run_gateway(settings, addresses, args.metrics_listen))
    finally:
        writer.stop()  # writes what is still queued
    return 0


def _worker_addresses(text: str) -> list[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise ConfigurationError(f"--worker-addresses needs at least one worker address, got {text!r}")
    return addresses


def worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.server import run_worker  # noqa: PLC0415

    asyncio.run(run_worker(settings, args.worker_id, args.listen, args.metrics_listen, args.internal_listen))
    return 0


def notify_edge(args: argparse.Namespace, settings: Settings) -> int:
    from notifications.edge import run_edge  # noqa: PLC0415

    addresses = _worker_addresses(args.worker_addresses)
    asyncio.run(run_edge(settings, args.listen or settings.notify_listen, addresses))
    return 0


def channel_sim(args: argparse.Namespace, settings: Settings) -> int:
    return int(args.func(args))


def ledger(args: argparse.Namespace, settings: Settings) -> int:
    if args.ledger_command == "seed":
        return _seed_ledger(args, settings)
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


def _seed_ledger(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate ledger seed` (stack/seed_ledger.py): 0 seeded, 2 refused. The rows are made up: never in production."""
    if settings.mode == "production":
        print(
            "paygate: `ledger seed` writes made-up payments into the ledger; it is refused in production mode "
            "(PAYGATE_MODE=production)",
            file=sys.stderr,
        )
        return 2
    from stack.seed_ledger import print_progress, seed  # noqa: PLC0415

    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # the SQLite file of a stack not yet served
    accounts = args.accounts if args.accounts is not None else max(args.postings // 10, 10)
    try:
        report = seed(
            settings.effective_database_url(),
            postings=args.postings,
            accounts=accounts,
            owner=args.owner,
            prefix=args.prefix,
            progress=print_progress,
        )
    except ValueError as error:
        print(f"paygate: {error}", file=sys.stderr)
        return 2
    print(report.to_json())
    return 0


def sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from runtime import db  # noqa: PLC0415
    from workers.codec.encode import payment as encode_payment  # noqa: PLC0415
    from workers.wiring import build_service  # noqa: PLC0415

    settings = running_stack_redis(settings)
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.require_current_schema(database)
        service = build_service(settings, database, metrics=None)
        try:
            confirmed = service.confirm_payment(args.payment_id)
        finally:
            service.close()
    except PaygateError as error:
        print(f"paygate: {error.message}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    print(MessageToJson(encode_payment(confirmed), preserving_proto_field_name=True, indent=None))
    return 0


def database(args: argparse.Namespace, settings: Settings) -> int:
    if args.db_command == "explain":
        return _explain(args, settings)
    from runtime import db  # noqa: PLC0415

    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.upgrade(database)
        print(f"schema at revision {db.current_revision(database)}")
    finally:
        database.dispose()
    return 0


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate db explain` (stack/explain_queries.py): 0 every statement on an index, 1 a full scan, 2 no seed."""
    from stack import explain_queries  # noqa: PLC0415

    try:
        clean = explain_queries.run(
            settings.effective_database_url(), args.owner, args.prefix, refresh_statistics=args.analyze
        )
    except explain_queries.NoSample as error:
        print(f"paygate: {error}", file=sys.stderr)
        return 2
    return 0 if clean else 1


def keys(args: argparse.Namespace, settings: Settings) -> int:
    from stack import keys_command  # noqa: PLC0415

    return keys_command.run(args, settings)


def keys_rewrap(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate keys rewrap`: its own module (stack/rewrap.py), loaded only when run."""
    from stack import rewrap  # noqa: PLC0415

    return rewrap.run(args, settings)


def running_stack_redis(settings: Settings) -> Settings:
    """The Redis of the `serve` stack using this data dir, when no PAYGATE_REDIS_URL names one."""
    marker = settings.run_dir / "redis.url"
    if not settings.redis_url and marker.exists():
        return settings.replace(redis_url=marker.read_text().strip())
    return settings


def reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate reconcile --channel C --date D`: 0 all matched, 1 anything unmatched, 2 could not reconcile.
    `paygate reconcile correct ITEM --reason TEXT`: 0 posted, 1 refused (docs/reconciliation.md)."""
    from datetime import UTC, date, datetime  # noqa: PLC0415

    from runtime import audit, db  # noqa: PLC0415
    from workers.domain.types import Method  # noqa: PLC0415
    from workers.reconciliation import fetch, metrics, report, run  # noqa: PLC0415

    def clock() -> datetime:
        return datetime.now(UTC)

    if getattr(args, "reconcile_command", None) == "correct":
        database = db.Database(settings.effective_database_url(), pool_size=1)
        try:
            db.require_current_schema(database)
            audit.enable(database, audit.chain_key(settings))
            done = run.correct(database, args.item_id, args.reason, clock(), actor=audit.cli_actor())
        except run.NotCorrectable as refused:
            print(f"paygate: {refused}", file=sys.stderr)
            return 1
        finally:
            database.dispose()
        amount, currency = done.clearing_minor, done.currency
        print(
            f"corrected {done.item_id}: entry {done.entry_id} (correction), "
            f"clearing:{done.channel} {amount:+d} {currency}, suspense:{done.channel} {-amount:+d} {currency}"
        )
        return 0
    if not args.channel or not args.date:
        print("paygate: reconcile needs --channel and --date (or: reconcile correct ITEM)", file=sys.stderr)
        return 2
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        print(f"paygate: --date must be YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
        return 2
    channel = fetch.load_channel(settings, Method(args.channel), clock)  # ConfigurationError: exit 2
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.require_current_schema(database)
        done_run = run.reconcile(database, channel, day, clock)
    except fetch.StatementUnavailable as error:
        print(f"paygate: {error}; nothing was stored", file=sys.stderr)
        return 2
    finally:
        channel.http.close()
        database.dispose()
    metrics.export_items(done_run.channel, report.counts(done_run), settings.metrics_dir)
    print(report.as_json(done_run) if args.json else report.render_text(done_run))
    return 1 if done_run.unmatched else 0


def bench(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate bench` (loadtest/paygate_bench.py). It drives a checkout's loadtest/ and tests/support.py, which
    are not installed packages: the repository root goes on the path, for the load processes it spawns too."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "loadtest" / "paygate_bench.py").is_file():
        print("paygate bench: needs the source checkout (loadtest/ beside stack/)", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    # Imported by name: loadtest/ and tests/ are outside the packages mypy checks (pyproject.toml).
    bench_module = importlib.import_module("loadtest.paygate_bench")
    return int(bench_module.main(args))


def webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from stack import webhooks_command  # noqa: PLC0415

    return webhooks_command.run(args, settings)


def risk(args: argparse.Namespace, settings: Settings) -> int:
    from stack import risk_command  # noqa: PLC0415

    return risk_command.run(args, settings)
