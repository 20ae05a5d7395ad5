"""`paygate risk …` (docs/risk.md): check and reload the rules file, fingerprint a phone number for a blocklist,
and operate reviews — list the payments the risk engine holds, release or refuse one.

Reviews act on the database and Redis directly, like `paygate sandbox confirm`: the release runs the worker's own
code (the wallet debit under its fenced lease, or the channel attempt), so no worker has to be asked, and a stack
that is down can still be reviewed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from runtime import audit, db
from runtime.errors import ConfigurationError, PaygateError
from runtime.master_key import derive_key
from runtime.settings import Settings
from workers.codec.grammar import E164, Violations
from workers.domain.limits import TEXT_MAX_CHARS
from workers.domain.types import PaymentRecord
from workers.risk import rules_file
from workers.risk.engine import PHONE_KEY_PURPOSE, mask_phone, phone_fingerprint
from workers.risk.rules_file import RulesError


def check_risk_rules(settings: Settings) -> Path | None:
    """The configured rules file after checking it (ConfigurationError naming the problem), or None (no rules)."""
    path = settings.effective_risk_rules()
    if path is not None:
        try:
            rules_file.load(path)
        except RulesError as error:
            raise ConfigurationError(f"PAYGATE_RISK_RULES: {error}") from None
    return path


def add_subcommands(subcommands: Any, common: Any) -> None:
    risk = subcommands.add_parser("risk", help="the risk engine: rules file, phone fingerprints, reviews")
    actions = risk.add_subparsers(dest="risk_command", required=True)
    check = actions.add_parser("check", help="check a rules file (default PAYGATE_RISK_RULES); exit 1 if unusable")
    check.add_argument("file", nargs="?", type=Path)
    reload = actions.add_parser(
        "reload", help="check PAYGATE_RISK_RULES and mark it changed: workers apply it within a second"
    )
    phone = actions.add_parser(
        "phone", help="read an E.164 phone number on stdin; print its fingerprint for a blocklist (never stored)"
    )
    review = actions.add_parser("review", help="payments held for review")
    reviews = review.add_subparsers(dest="review_command", required=True)
    listing = reviews.add_parser("list", help="payments IN_REVIEW, oldest first")
    listing.add_argument("--limit", type=int, default=100)
    decided = [reviews.add_parser(name, help=text) for name, text in _DECISIONS.items()]
    for parser in decided:
        parser.add_argument("payment_id")
        parser.add_argument("--reason", required=True, help="why (kept in the audit trail; a refusal's is shown)")
    for parser in (check, reload, phone, listing, *decided):
        common(parser)
    for parser in (listing, *decided):
        parser.add_argument("--json", action="store_true", help="print one JSON object")


_DECISIONS = {
    "release": "let a held payment continue exactly as if it had been allowed",
    "refuse": "fail a held payment (FAILED, with the reason)",
}


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.risk_command == "check":
            return _check(args.file or settings.effective_risk_rules())
        if args.risk_command == "reload":
            return _reload(settings)
        if args.risk_command == "phone":
            return _phone(settings)
        return _review(args, settings)
    except (PaygateError, RulesError) as error:
        print(f"paygate: {getattr(error, 'message', error)}", file=sys.stderr)
        return 1


def _check(path: Path | None) -> int:
    if path is None:
        print("paygate: no rules file given and PAYGATE_RISK_RULES is not set", file=sys.stderr)
        return 1
    rules = rules_file.load(path)
    kinds = sorted({rule.kind.value for rule in rules.rules})
    print(
        json.dumps(
            {
                "file": str(path),
                "rules": len(rules.rules),
                "kinds": kinds,
                "review_at": str(rules.review_at),
                "deny_at": str(rules.deny_at),
            }
        )
    )
    return 0


def _reload(settings: Settings) -> int:
    path = check_risk_rules(settings)
    if path is None:
        print("paygate: PAYGATE_RISK_RULES is not set: no rules to reload", file=sys.stderr)
        return 1
    _record_reload_request(settings, path)
    os.utime(path)  # workers look at the file's modification time once a second
    print(json.dumps({"file": str(path), "reloaded": True}))
    return 0


def _record_reload_request(settings: Settings, path: Path) -> None:
    """Who asked for the reload, and of which content (docs/audit.md); each worker then records its own reload."""
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.require_current_schema(database)
        audit.enable(database, audit.chain_key(settings))
        details: dict[str, str | int | bool | None] = {
            "path": str(path)[:256],
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        with database.write() as connection:
            audit.record(
                connection, actor=audit.cli_actor(), action="risk.rules_reload", subject="risk-rules", details=details
            )
    finally:
        database.dispose()


def _phone(settings: Settings) -> int:
    number = sys.stdin.readline().strip()  # stdin, so the number stays out of shell history and process lists
    if E164.fullmatch(number) is None:
        print("paygate: not an E.164 number ('+', then 2-15 digits, the first not 0)", file=sys.stderr)
        return 1
    fingerprint = phone_fingerprint(derive_key(settings, PHONE_KEY_PURPOSE), number)
    print(json.dumps({"phone": mask_phone(number), "fingerprint": fingerprint}, ensure_ascii=False))
    return 0


def _review(args: argparse.Namespace, settings: Settings) -> int:
    from stack.commands import running_stack_redis  # noqa: PLC0415 - stack.commands imports this module
    from workers.wiring import build_service  # noqa: PLC0415 - only reviews need the worker's operations

    if args.review_command != "list":
        v = Violations()
        v.text("reason", args.reason, TEXT_MAX_CHARS)
        v.raise_if_any()
        if not args.reason.strip():
            print("paygate: --reason must say why", file=sys.stderr)
            return 1
    # A review assesses nothing, so it loads no rules: a broken rules file (perhaps why payments are being held)
    # must not keep an operator from releasing or refusing them.
    settings = dataclasses.replace(running_stack_redis(settings), risk_rules="off")
    database = db.Database(settings.effective_database_url(), pool_size=1)
    try:
        db.require_current_schema(database)
        service = build_service(settings, database, metrics=None, group_commit=False)
        try:
            if args.review_command == "list":
                result: dict[str, Any] = {"payments": [_shown(p) for p in service.payments_in_review(args.limit)]}
            elif args.review_command == "release":
                result = _shown(service.release_review(args.payment_id, args.reason, _actor()))
            else:
                result = _shown(service.refuse_review(args.payment_id, args.reason, _actor()))
        finally:
            service.close()
    finally:
        database.dispose()
    print(json.dumps(result, indent=None if args.json else 2, ensure_ascii=False))
    return 0


def _actor() -> str:
    """Who decided, for the audit trail: the operator's login (runtime/audit.py)."""
    return audit.cli_actor()


def _shown(record: PaymentRecord) -> dict[str, Any]:
    from workers.codec.encode import payment  # noqa: PLC0415

    shown: dict[str, Any] = MessageToDict(payment(record), preserving_proto_field_name=True)
    shown["owner"] = record.owner
    return shown
