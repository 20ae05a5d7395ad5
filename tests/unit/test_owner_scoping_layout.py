"""Owner isolation is a rule of the data layer: only workers/store/ touches the owned tables.

Payments, refunds and transfers belong to the owner that created them (docs/architecture.md, "Owners"). If any
other module could build its own query on those tables, it could forget the owner; so this test fails the build
when one imports them. `ledger verify` (workers/ledger/verify.py) is the one reader allowed besides the store: it is the
operator's tool, runs outside any caller's request, and reads every owner's rows by design.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO_ROOT

OWNED_TABLES = {
    "payments",
    "payment_attempts",
    "refunds",
    "transfers",
    "events",
    "webhook_endpoints",
    "webhook_dead_letters",
    "card_tokens",
}
ALLOWED = {
    "workers/store/records.py",
    "workers/store/attempts.py",
    "workers/store/refunds.py",
    "workers/store/events.py",
    "workers/store/webhooks.py",
    "workers/store/cards.py",
    "workers/ledger/verify.py",
    "workers/ledger/verify_channels.py",
    "runtime/schema.py",
}
# Reconciliation's store reads every owner's rows for the operator's report, like `ledger verify`.
ALLOWED |= {"workers/store/reconciliation.py"}
# The scale tools: `paygate ledger seed` writes made-up rows of one owner in bulk, and `paygate db explain` reads
# them to bind the store's own statements to real values. Neither serves a caller's lookup, so neither can leak one
# owner's rows to another; `ledger seed` is refused in production mode.
ALLOWED |= {"stack/seed_ledger.py", "stack/explain_queries.py"}
# The outbox's write side numbers and inserts the events a transaction added; it reads nobody's events.
ALLOWED |= {"runtime/outbox.py"}
# `paygate keys rewrap` re-seals every owner's secrets under a new master key: an operator's tool, like `ledger
# verify`, that returns no row to anyone.
ALLOWED |= {"stack/rewrap.py"}
SOURCE_PACKAGES = ("paygate", "gateway", "workers", "loadtest", "stack", "runtime")


def _modules() -> list[Path]:
    found = []
    for package in SOURCE_PACKAGES:
        found.extend(p for p in (REPO_ROOT / package).rglob("*.py") if "/v1/" not in p.as_posix())
    return found


def _imports_owned_table(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "runtime.schema":
            names |= {alias.name for alias in node.names} & OWNED_TABLES
        if isinstance(node, ast.Attribute) and node.attr in OWNED_TABLES:
            value = node.value
            if isinstance(value, ast.Name) and value.id == "schema":
                names.add(node.attr)
    return names


def test_only_the_store_touches_the_owned_tables() -> None:
    offenders = {}
    for path in _modules():
        relative = path.relative_to(REPO_ROOT).as_posix()
        used = _imports_owned_table(ast.parse(path.read_text(), relative))
        if used and relative not in ALLOWED:
            offenders[relative] = sorted(used)
    assert offenders == {}, "query payments/refunds/transfers through workers/store/ (owner-scoped)"


def test_the_store_scopes_every_caller_lookup_by_owner() -> None:
    """Each statement of the store that a caller's request can reach names the owner in its WHERE clause."""
    from workers.store import records as store  # noqa: PLC0415

    scoped = [
        store._PAYMENT_BY_ID,
        store._PAYMENT_BY_ORDER,
        store._TRANSITION,
        store._RECORD_REFUND,
        store._WALLET_POSTINGS,
    ]
    from workers.store import events, webhooks  # noqa: PLC0415

    scoped += [events._AFTER, events._AFTER_OF_TYPES, events._SEQ_OF]
    scoped += [webhooks._OF_OWNER, webhooks._BY_ID, webhooks._REMOVE, webhooks._ROTATE, webhooks._DEAD_OF_OWNER]
    from workers.store import cards  # noqa: PLC0415

    scoped += [cards._BY_TOKEN, cards._BY_FINGERPRINTS, cards._NEW_EXPIRY]
    for statement in scoped:
        where = str(statement.whereclause)
        assert ".owner = :" in where, where
