"""`paygate audit verify|list` (docs/audit.md): check the hash chain, show who did what.

verify: exit 0 when every entry checks, 1 naming every entry that does not, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.settings import Settings

if TYPE_CHECKING:
    from runtime.db import Database

MAX_LIST = 10_000
_SINCE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?)?Z?")
_ANCHOR = re.compile(r"(\d{1,19}):([0-9a-f]{64})")


def add_parser(subcommands: Any) -> None:
    """The `audit` subcommands; `--data-dir` as every other command has it."""
    parser = subcommands.add_parser("audit", help="the tamper-evident audit trail of operator and key actions")
    actions = parser.add_subparsers(dest="audit_command", required=True)
    check = actions.add_parser("verify", help="check the whole hash chain; exit 1 naming every bad entry")
    check.add_argument(
        "--anchor", help="SEQ:HASH noted earlier outside the database (from a previous verify): must still be there"
    )
    listing = actions.add_parser("list", help="the newest entries, oldest first")
    listing.add_argument("--since", help="UTC time or prefix of one, e.g. 2026-11-28 or 2026-11-28T20:00")
    listing.add_argument("--action", help="one action (key.revoke), or every action under a prefix ending in '.'")
    listing.add_argument("--limit", type=int, default=100, help=f"at most this many (default 100, up to {MAX_LIST})")
    for command in (check, listing):
        command.add_argument("--data-dir", type=Path, help="data directory (default ./.paygate, env PAYGATE_DATA_DIR)")
        command.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from runtime import db  # noqa: PLC0415 - the parser is built for every command; the database only for this one

    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.require_current_schema(database)
        if args.audit_command == "verify":
            return _verify(args, settings, database)
        return _list(args, database)
    finally:
        database.dispose()


def _verify(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    from runtime import audit  # noqa: PLC0415
    from runtime.audit_verify import verify  # noqa: PLC0415

    anchor = None
    if args.anchor:
        matched = _ANCHOR.fullmatch(args.anchor)
        if matched is None:
            print("paygate: --anchor must be SEQ:HASH (64 lower-case hex digits)", file=sys.stderr)
            return 2
        anchor = (int(matched.group(1)), matched.group(2))
    report = verify(database, audit.chain_keys(settings), anchor=anchor)
    print(report.to_json() if args.json else report.render())
    return 0 if report.ok else 1


def _list(args: argparse.Namespace, database: Database) -> int:
    from runtime.audit_verify import entries  # noqa: PLC0415

    if not 1 <= args.limit <= MAX_LIST:
        print(f"paygate: --limit must be between 1 and {MAX_LIST}", file=sys.stderr)
        return 2
    if args.since and not _SINCE.fullmatch(args.since):
        print("paygate: --since must be a UTC time such as 2026-11-28 or 2026-11-28T20:00:00", file=sys.stderr)
        return 2
    found = entries(database, since=(args.since or "").removesuffix("Z") or None, action=args.action, limit=args.limit)
    shown = [
        {
            "seq": e.seq,
            "recorded_at": e.recorded_at,
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "details": dict(e.details),
        }
        for e in found
    ]
    if args.json:
        print(json.dumps({"entries": shown}))
        return 0
    for e in shown:
        details = json.dumps(e["details"], sort_keys=True, ensure_ascii=False)
        print(f"{e['seq']:>8}  {e['recorded_at']}  {e['actor']:<28} {e['action']:<22} {e['subject']}  {details}")
    return 0
