"""The `paygate` command: serve the stack, run one gateway or worker, manage API keys, migrate the database."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from channelsim.cli import add_subcommands as add_channel_sim
from runtime import logs
from runtime.errors import ConfigurationError
from runtime.settings import Settings
from stack import audit_command, backup_command, call_command, commands, risk_command


def finite(text: str) -> float:
    """A command-line number: `nan` and `inf` are refused like any other non-number (argparse: exit 2)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def count(text: str) -> int:
    """A command-line count (workers, postings, processes, …): a whole number, at least 0."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default ./.paygate, env PAYGATE_DATA_DIR)")


def _public_tls(parser: argparse.ArgumentParser) -> None:
    """The gateway's public port (docs/configuration.md, "TLS"); flags win over PAYGATE_TLS_*."""
    parser.add_argument("--tls-cert", help="PEM certificate chain of the public port (env PAYGATE_TLS_CERT)")
    parser.add_argument("--tls-key", help="PEM private key of the public port (env PAYGATE_TLS_KEY)")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this PEM CA")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate", description="Paygate payment gateway")
    subcommands = parser.add_subparsers(dest="command", required=True)
    _process_commands(subcommands)
    add_channel_sim(subcommands)
    _admin_commands(subcommands)
    _reconcile_command(subcommands)
    _bench_command(subcommands)
    return parser


def _process_commands(subcommands: Any) -> None:
    """The long-running processes: the whole stack, or one of its parts."""
    serve = subcommands.add_parser("serve", help="run the whole stack: gateway, workers, embedded Redis and SQLite")
    _common(serve)
    serve.add_argument("--workers", type=count, help="worker processes (default: CPU count)")
    serve.add_argument("--listen", help="gateway address HOST:PORT (default 127.0.0.1:50051)")
    serve.add_argument("--metrics-listen", help="/metrics address HOST:PORT (default 127.0.0.1:9464)")
    serve.add_argument(
        "--notify-listen", help="provider callbacks at HOST:PORT/notify/<channel> (default 127.0.0.1:8080; off: none)"
    )
    serve.add_argument(
        "--channel-sim-listen", help="dev mode: run the channel simulator on HOST:PORT (default 127.0.0.1:8090; off)"
    )
    serve.add_argument(
        "--plaintext",
        action="store_true",
        help="dev mode only: no TLS on the public port nor between gateway and workers (default: dev certificates)",
    )
    _public_tls(serve)

    gateway = subcommands.add_parser("gateway", help="run one gateway process in front of existing workers")
    _common(gateway)
    gateway.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    gateway.add_argument(
        "--worker-addresses",
        required=True,
        help="comma-separated worker addresses: HOST:PORT, unix:PATH, or dns:HOST:PORT (one entry per A record)",
    )
    gateway.add_argument("--metrics-listen", help="serve this process's own /metrics on HOST:PORT")
    _public_tls(gateway)

    worker = subcommands.add_parser("worker", help="run one worker process")
    _common(worker)
    worker.add_argument("--worker-id", default=os.environ.get("HOSTNAME", "worker"), help="id in x-paygate-worker")
    worker.add_argument("--listen", required=True, help="HOST:PORT or unix:PATH")
    worker.add_argument("--metrics-listen", help="serve this process's own /metrics on HOST:PORT")
    worker.add_argument(
        "--internal-listen",
        help="HOST:PORT or unix:PATH for the notification edge's callbacks only (none: the worker takes none)",
    )

    edge = subcommands.add_parser("notify-edge", help="run the HTTP edge that receives provider callbacks")
    _common(edge)
    edge.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080)")
    edge.add_argument(
        "--worker-addresses",
        required=True,
        help="comma-separated *internal* worker addresses (their --internal-listen)",
    )


def _admin_commands(subcommands: Any) -> None:
    """What an operator runs against a stack's data: keys, the ledger, the sandbox channel, the schema."""
    keys = subcommands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret (shown only once)")
    _common(create)
    create.add_argument("--name", required=True, help="the calling service; order ids are scoped to it")
    create.add_argument("--scopes", default="*", help="comma-separated scopes (default *: every method)")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    _limit_arguments(create)
    listing = key_commands.add_parser("list", help="list keys with their limits and last use (never secrets)")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    limits = key_commands.add_parser("set-limits", help="change a key's limits; gateways apply them within seconds")
    _common(limits)
    limits.add_argument("key_id")
    limits.add_argument("--json", action="store_true", help="print one JSON object")
    _limit_arguments(limits)
    rotate = key_commands.add_parser(
        "rotate", help="a new secret (shown only once); the old one keeps verifying for --grace-hours"
    )
    _common(rotate)
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-hours", type=finite, default=24.0, help="how long the old secret still verifies")
    rotate.add_argument("--json", action="store_true", help="print one JSON object")
    revoke = key_commands.add_parser("revoke", help="revoke a key; running gateways stop accepting it")
    _common(revoke)
    revoke.add_argument("key_id")
    rewrap = key_commands.add_parser(
        "rewrap", help="re-seal every secret at rest under the current master key (after a master-key rotation)"
    )
    _common(rewrap)
    rewrap.add_argument("--dry-run", action="store_true", help="count what would be rewrapped; change nothing")

    _webhooks_command(subcommands)
    audit_command.add_parser(subcommands)
    call_command.add_parser(subcommands, _common)
    risk_command.add_subcommands(subcommands, _common)

    certs = subcommands.add_parser("certs", help="TLS certificates")
    cert_commands = certs.add_subparsers(dest="certs_command", required=True)
    dev = cert_commands.add_parser(
        "dev", help="make (or reuse) a local CA and dev certificates under the data dir; print how to use them"
    )
    _common(dev)
    dev.add_argument(
        "--hosts", nargs="+", default=[], help="more names or addresses for the gateway's certificate (comma-separated)"
    )

    ledger = subcommands.add_parser("ledger", help="the double-entry ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_commands.add_parser("verify", help="check every ledger invariant; exit 1 on any breach")
    _common(verify)

    sandbox = subcommands.add_parser("sandbox", help="the SANDBOX payment channel")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    confirm = sandbox_commands.add_parser(
        "confirm",
        help="deliver the channel's confirmation of a PENDING payment (PAYGATE_SANDBOX_CONFIRMATION=deferred)",
    )
    _common(confirm)
    confirm.add_argument("payment_id")

    database = subcommands.add_parser("db", help="database schema")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations up to the newest schema")
    _common(upgrade)
    backup_command.add_parser(db_commands, _common)
    _scale_tools(ledger_commands, db_commands)


def _scale_tools(ledger_commands: Any, db_commands: Any) -> None:
    """`paygate ledger seed` and `paygate db explain`: a big made-up ledger and the hot statements' plans on it."""
    seed = ledger_commands.add_parser(
        "seed", help="write a large valid ledger of made-up payments, for scale tests (refused in production mode)"
    )
    _common(seed)
    seed.add_argument("--postings", type=count, required=True, help="postings to write, e.g. 1000000")
    seed.add_argument("--accounts", type=count, help="wallets + creator payables (default: postings / 10)")
    seed.add_argument("--owner", default="seed", help="the calling service the payments belong to (default seed)")
    seed.add_argument("--prefix", default="seed", help="of subjects and order ids, letters and digits (default seed)")

    explain = db_commands.add_parser(
        "explain", help="print the hot statements' query plans on a seeded ledger; exit 1 on any full scan"
    )
    _common(explain)
    explain.add_argument("--analyze", action="store_true", help="refresh the planner's statistics first (not SQLite)")
    explain.add_argument("--owner", default="seed", help="the seed's --owner (default seed)")
    explain.add_argument("--prefix", default="seed", help="the seed's --prefix (default seed)")


def _reconcile_command(subcommands: Any) -> None:
    """`paygate reconcile --channel C --date D` and `paygate reconcile correct ITEM --reason TEXT`."""
    reconcile = subcommands.add_parser(
        "reconcile", help="match a channel's daily statement with our records; exit 1 when anything is unmatched"
    )
    _common(reconcile)
    reconcile.add_argument("--channel", choices=("alipay", "wechat_pay", "unionpay", "card"))
    reconcile.add_argument("--date", help="the provider's day YYYY-MM-DD (Asia/Shanghai; UTC for card)")
    reconcile.add_argument("--json", action="store_true", help="print one JSON object")
    actions = reconcile.add_subparsers(dest="reconcile_command")
    correct = actions.add_parser("correct", help="book one item's difference as a correction entry (once)")
    # SUPPRESS: given before `correct`, the reconcile parser's --data-dir must not be reset by this one's default.
    correct.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="data directory")
    correct.add_argument("item_id")
    correct.add_argument("--reason", required=True, help="why the difference is booked (kept with the item)")


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", help="calls of this key: 50/s, 300/min, 1000/h, off, or default")
    parser.add_argument("--burst", help="calls the key may make at once above its rate (a whole number, or default)")
    parser.add_argument("--user-rate", help="calls of this key for one user (payer): 5/s, off, or default")
    parser.add_argument("--user-burst", help="burst of the per-user rate (a whole number, or default)")
    parser.add_argument("--max-concurrent", help="calls of this key in flight per gateway (a number, off, default)")


def _webhooks_command(subcommands: Any) -> None:
    """`paygate webhooks …`: run by stack/webhooks_command.py."""
    webhooks = subcommands.add_parser("webhooks", help="webhook endpoints: where an owner's events are POSTed")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)
    add = actions.add_parser("add", help="add an endpoint and print its signing secret (shown only once)")
    add.add_argument("--owner", required=True, help="the owner (API key name) whose events it receives")
    add.add_argument("--url", required=True, help="where deliveries are POSTed (https in production)")
    add.add_argument("--types", default="", help="comma-separated EventType names (default: every type)")
    listing = actions.add_parser("list", help="an owner's endpoints and where each stands (never secrets)")
    listing.add_argument("--owner", required=True)
    remove = actions.add_parser("remove", help="stop delivering to an endpoint")
    remove.add_argument("--owner", required=True)
    remove.add_argument("endpoint_id")
    rotate = actions.add_parser("rotate-secret", help="a new secret; the old one keeps signing for --overlap-hours")
    rotate.add_argument("--owner", required=True)
    rotate.add_argument("endpoint_id")
    rotate.add_argument("--overlap-hours", type=finite, default=24.0)
    dead = actions.add_parser("dead-letters", help="events an owner's endpoints never accepted")
    dead.add_argument("--owner", required=True)
    again = actions.add_parser("redeliver", help="send one event again now, to its owner's endpoints")
    again.add_argument("event_id")
    again.add_argument("--endpoint", default="", help="only this endpoint")
    for parser in (add, listing, remove, rotate, dead, again):
        _common(parser)
        parser.add_argument("--json", action="store_true", help="print one JSON object")


def _bench_command(subcommands: Any) -> None:
    """`paygate bench`: the stack beside the bare gRPC floor, one JSON object per scenario (loadtest/)."""
    bench = subcommands.add_parser(
        "bench", help="benchmark a fresh stack against the bare gRPC floor; one JSON line per scenario"
    )
    bench.add_argument(
        "--scenarios",
        help="comma-separated (default: all): wallet_purchase, hot_creator, balance_read, top_up, transfer, "
        "refund, channel_purchase, mixed",
    )
    bench.add_argument("--duration-s", type=finite, help="measured seconds of each run (default 10)")
    bench.add_argument("--warmup-s", type=finite, help="unmeasured seconds before each run (default 2)")
    bench.add_argument("--processes", type=count, help="load generator processes (default 2)")
    bench.add_argument("--in-flight", type=count, help="calls in flight per load process, closed loop (default 32)")
    bench.add_argument("--workers", type=count, help="the stack's worker processes (default 2)")
    bench.add_argument("--half-load", type=finite, help="open-loop rate as a share of the saturating rate (0.5)")
    bench.add_argument(
        "--repeat", type=count, help="floor/stack pairs per scenario; the pair with the median ratio is reported (1)"
    )
    bench.add_argument("--database-url", help="run the stack on this PostgreSQL/MariaDB database (default SQLite)")
    bench.add_argument(
        "--fresh-database", action="store_true", help="with --database-url: a throwaway database on that server"
    )
    bench.add_argument("--smoke", action="store_true", help="tiny durations and load, for tests: figures mean nothing")
    bench.add_argument(
        "--tls",
        action="store_true",
        help="the stack serves TLS (dev CA) and its clients use it; the floor stays plaintext",
    )
    bench.add_argument("--out", type=Path, help="also write the JSON lines to this file")
    bench.add_argument(
        "--sweep", help="calls in flight per load process for the sweep chart (1,4,16,32,64; '' for none)"
    )
    bench.add_argument("--docs", type=Path, help="write the run's section into this file (default docs/benchmarks.md)")
    bench.add_argument("--no-docs", action="store_true", help="do not write the run's section of docs/benchmarks.md")
    bench.add_argument(
        "--ledger-postings", type=count, help="then seed a ledger this big and measure the wallet scenarios again"
    )


def _database(args: argparse.Namespace, settings: Settings) -> int:
    """`paygate db backup` (stack/backup_command.py); `upgrade` and `explain` are in stack/commands.py."""
    if args.db_command == "backup":
        return backup_command.run(args, settings)
    return commands.database(args, settings)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": commands.serve,
    "gateway": commands.gateway,
    "worker": commands.worker,
    "notify-edge": commands.notify_edge,
    "channel-sim": commands.channel_sim,
    "keys": commands.keys,
    "ledger": commands.ledger,
    "sandbox": commands.sandbox,
    "db": _database,
    "reconcile": commands.reconcile,
    "bench": commands.bench,
    "webhooks": commands.webhooks,
    "audit": audit_command.run,
    "call": call_command.run,
    "risk": commands.risk,
    "certs": commands.certs,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(
            data_dir=getattr(args, "data_dir", None),
            workers=getattr(args, "workers", None),
            listen=getattr(args, "listen", None) if args.command in {"serve", "gateway"} else None,
            metrics_listen=getattr(args, "metrics_listen", None) if args.command == "serve" else None,
            notify_listen=getattr(args, "notify_listen", None),
            channel_sim_listen=getattr(args, "channel_sim_listen", None),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
            tls_client_ca=getattr(args, "tls_client_ca", None),
        )
        logs.configure(_process_name(args), settings.log_level)
        rewrap = args.command == "keys" and args.keys_command == "rewrap"
        code = (commands.keys_rewrap if rewrap else COMMANDS[args.command])(args, settings)
        sys.stdout.flush()  # a reader gone away shows here, in the handler below, not as a traceback at exit
        return code
    except BrokenPipeError:
        # The reader stopped reading (`paygate call ... | head`): end quietly, as shell tools do on SIGPIPE, with
        # stdout pointed at /dev/null so the interpreter's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except ConfigurationError as error:
        print(f"paygate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _process_name(args: argparse.Namespace) -> str:
    if args.command == "worker":
        return str(args.worker_id)
    return str(args.command)
