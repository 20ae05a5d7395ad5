"""`paygate keys rewrap [--dry-run]`: re-seal every secret at rest under the current master key
(docs/security.md, "Secrets at rest and the master key").

Each sealed column is read in bounded batches in key order; every blob not sealed by the current key (an older
master key's, or a legacy Fernet token) is opened with the ring and sealed again, and written back only if the row
still holds the blob that was read (a guarded update), so the command is safe while the stack runs: a secret
rotated meanwhile is already current and is counted as "changed meanwhile". It is idempotent: a second run finds
everything current. Card numbers are not touched, only their data keys (envelope encryption); a card's
fingerprint is recomputed with the current key alongside, so deduplication keeps working once the old key is gone.

It reads every owner's rows by design, like `ledger verify`: an operator's tool, never reachable from a call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select, update

from gateway.keystore import API_KEY_SECRET_PURPOSE
from runtime import audit
from runtime.db import Database, upgrade
from runtime.master_key import MasterKeyRing, UnreadableBlob
from runtime.schema import api_keys, card_tokens, webhook_endpoints
from runtime.settings import Settings
from workers.vault.cards import DATA_KEY_PURPOSE, fingerprint, open_card
from workers.webhooks.endpoints import WEBHOOK_SECRET_PURPOSE

BATCH_ROWS = 200
Extra = Callable[[MasterKeyRing, Any, bytes], dict[str, object]]


def _card_fingerprint(ring: MasterKeyRing, row: Any, data_key: bytes) -> dict[str, object]:
    number = open_card(data_key, bytes(row.card_ciphertext), row.token, row.owner)
    return {"fingerprint": fingerprint(ring, row.owner, number.reveal())[0]}


@dataclass(frozen=True)
class SealedColumn:
    table: Table
    key: str  # the row id, which is also the blob's associated context
    column: str
    purpose: str
    also: Extra | None = None  # more values to rewrite with the blob, from its clear content

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"


SEALED_COLUMNS = (
    SealedColumn(api_keys, "key_id", "secret_ciphertext", API_KEY_SECRET_PURPOSE),
    SealedColumn(api_keys, "key_id", "previous_secret_ciphertext", API_KEY_SECRET_PURPOSE),
    SealedColumn(webhook_endpoints, "endpoint_id", "secret_ciphertext", WEBHOOK_SECRET_PURPOSE),
    SealedColumn(webhook_endpoints, "endpoint_id", "previous_secret_ciphertext", WEBHOOK_SECRET_PURPOSE),
    SealedColumn(card_tokens, "token", "data_key_ciphertext", DATA_KEY_PURPOSE, _card_fingerprint),
)


@dataclass
class Counts:
    rewrapped: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: list[str] = field(default_factory=list)

    def line(self, name: str, dry_run: bool) -> str:
        done = "to rewrap" if dry_run else "rewrapped"
        return (
            f"{name}: {self.rewrapped} {done}, {self.current} already current, {self.changed_meanwhile} changed "
            f"meanwhile, {len(self.unreadable)} unreadable"
        )


def rewrap_column(database: Database, ring: MasterKeyRing, sealed: SealedColumn, *, dry_run: bool) -> Counts:
    counts = Counts()
    key = sealed.table.c[sealed.key]
    after = ""
    while True:  # keyset pagination: `after` grows strictly, so the loop ends with the table
        with database.read() as connection:
            batch = connection.execute(select(sealed.table).where(key > after).order_by(key).limit(BATCH_ROWS)).all()
        for row in batch:
            _rewrap_row(database, ring, sealed, row, counts, dry_run=dry_run)
        if len(batch) < BATCH_ROWS:
            return counts
        after = getattr(batch[-1], sealed.key)


def _rewrap_row(
    database: Database, ring: MasterKeyRing, sealed: SealedColumn, row: Any, counts: Counts, *, dry_run: bool
) -> None:
    old = getattr(row, sealed.column)
    row_id = getattr(row, sealed.key)
    if old is None:
        return
    old = bytes(old)
    if not ring.needs_rewrap(old):
        counts.current += 1
        return
    try:
        clear = ring.open(old, purpose=sealed.purpose, context=row_id)
        values: dict[str, object] = sealed.also(ring, row, clear) if sealed.also else {}
    except (UnreadableBlob, ValueError):
        counts.unreadable.append(row_id)
        return
    if dry_run:
        counts.rewrapped += 1
        return
    values[sealed.column] = ring.seal(clear, purpose=sealed.purpose, context=row_id)
    table = sealed.table
    with database.write() as connection:
        result = connection.execute(
            update(table).where(table.c[sealed.key] == row_id, table.c[sealed.column] == old).values(**values)
        )
    if result.rowcount == 1:
        counts.rewrapped += 1
    else:
        counts.changed_meanwhile += 1


def rewrap_all(database: Database, ring: MasterKeyRing, *, dry_run: bool) -> dict[str, Counts]:
    return {sealed.name: rewrap_column(database, ring, sealed, dry_run=dry_run) for sealed in SEALED_COLUMNS}


def _audit(database: Database, settings: Settings, ring: MasterKeyRing, results: dict[str, Counts]) -> None:
    """Key management is audited (docs/audit.md): who re-sealed what, under which master key."""
    audit.enable(database, audit.chain_key(settings))
    details: dict[str, str | int | bool | None] = {"master_key": ring.current_key_id}
    details["rewrapped"] = sum(counts.rewrapped for counts in results.values())
    details["unreadable"] = sum(len(counts.unreadable) for counts in results.values())
    with database.write() as connection:
        audit.record(connection, actor=audit.cli_actor(), action="master_key.rewrap", subject="ring", details=details)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print counts per column; exit 1 when a blob opens with no key of the ring (it names the rows)."""
    ring = MasterKeyRing.load(settings, create=False)
    database = Database(settings.effective_database_url(), pool_size=1)
    try:
        upgrade(database)
        results = rewrap_all(database, ring, dry_run=args.dry_run)
        if not args.dry_run:
            _audit(database, settings, ring, results)
    finally:
        database.dispose()
    print(f"current master key {ring.current_key_id}; ring {', '.join(ring.key_ids)}")
    for name, counts in results.items():
        print(counts.line(name, args.dry_run))
    unreadable = [f"{name} {row}" for name, counts in results.items() for row in counts.unreadable]
    if unreadable:
        print(
            "paygate: no key of the ring opens " + ", ".join(unreadable[:20]) + "; is a previous key missing from "
            "PAYGATE_MASTER_KEY_PREVIOUS?",
            file=sys.stderr,
        )
        return 1
    return 0
