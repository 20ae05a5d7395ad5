"""The read side of the audit trail (docs/audit.md): `verify` walks the chain and names every entry that does not
check; `entries` lists them for operators.

The walk reads pages of `PAGE_ROWS` entries in number order (each page its own short read), keeping only the last
entry's number and hash, so it runs in constant memory on a trail of any length and never holds a long
transaction. What it finds:

- hash_mismatch: an entry's content does not match its hash (edited, renumbered or forged without the key);
- link_mismatch: an entry does not name the one before it (an entry was inserted before it, or its predecessor
  was rewritten and re-hashed);
- missing: numbers absent in the middle, or at the end (the head says the trail is longer than the table);
- head_mismatch / head_missing: the head row disagrees with the last entry, or is gone;
- past_head: entries numbered beyond the head (appended outside `record`);
- unknown_key / unknown_version: an entry made under a chain key or encoding this verifier does not have;
- anchor_missing / anchor_mismatch: an entry whose hash was noted outside the database is gone or differs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, bindparam, select

from runtime import audit
from runtime.audit import AuditEntry, ChainKey
from runtime.db import Database
from runtime.schema_audit import audit_head, audit_log

PAGE_ROWS = 500
MAX_FINDINGS = 1000  # shown; the rest are counted
MAX_PAST_HEAD = 100

_PAGE = (
    select(audit_log)
    .where(audit_log.c.seq > bindparam("after"), audit_log.c.seq <= bindparam("upto"))
    .order_by(audit_log.c.seq)
    .limit(bindparam("rows"))
)
_PAST = (
    select(audit_log.c.seq).where(audit_log.c.seq > bindparam("after")).order_by(audit_log.c.seq).limit(MAX_PAST_HEAD)
)
_HEAD = select(audit_head.c.last_seq, audit_head.c.last_hash).where(audit_head.c.name == audit.HEAD_NAME)
_NO_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class Finding:
    seq: int | None
    kind: str
    detail: str


@dataclass
class Report:
    entries: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    findings: list[Finding] = field(default_factory=list)
    not_shown: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, seq: int | None, kind: str, detail: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(seq, kind, detail))
        else:
            self.not_shown += 1

    def render(self) -> str:
        head = f"head {self.head_seq} {self.head_hash}" if self.head_seq is not None else "no head"
        if self.ok:
            return f"audit trail intact: {self.entries} entries checked; {head}"
        lines = [f"audit trail BROKEN: {len(self.findings) + self.not_shown} findings; {self.entries} entries; {head}"]
        for found in self.findings:
            where = f"entry {found.seq}" if found.seq is not None else "trail"
            lines.append(f"  {where}: {found.kind}: {found.detail}")
        if self.not_shown:
            lines.append(f"  … and {self.not_shown} more")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "entries": self.entries,
                "head": {"seq": self.head_seq, "hash": self.head_hash},
                "findings": [{"seq": f.seq, "kind": f.kind, "detail": f.detail} for f in self.findings],
                "findings_not_shown": self.not_shown,
            }
        )


@dataclass
class _Walk:
    """What the walk carries from one entry to the next: constant size."""

    keys: dict[str, ChainKey]
    anchor: tuple[int, str] | None
    expected_seq: int = 1
    prev_hash: str = audit.GENESIS_HASH
    anchor_seen: bool = False


def verify(
    database: Database, keys: Sequence[ChainKey], *, anchor: tuple[int, str] | None = None, page_rows: int = PAGE_ROWS
) -> Report:
    """Check the whole chain against `keys` (each entry names the key it was made with) and, when given, an
    `anchor` (number, hash) noted outside the database earlier."""
    report = Report()
    with database.read() as connection:
        head = connection.execute(_HEAD).first()
    if head is None:
        report.add(None, "head_missing", "the head row is gone: the trail's end cannot be checked")
    else:
        report.head_seq, report.head_hash = head.last_seq, head.last_hash
    walk = _Walk({key.key_id: key for key in keys}, anchor)
    upto = head.last_seq if head is not None else _NO_LIMIT
    for row in _rows(database, upto, page_rows):
        _check_row(walk, row, report)
    if head is not None:
        _check_end(walk, head.last_seq, head.last_hash, report)
        _check_past_head(database, head.last_seq, report)
    _check_anchor(walk, report)
    return report


def _rows(database: Database, upto: int, page_rows: int) -> Iterator[Row[Any]]:
    after = 0
    while True:
        with database.read() as connection:
            page = connection.execute(_PAGE, {"after": after, "upto": upto, "rows": page_rows}).all()
        yield from page
        if len(page) < page_rows:
            return
        after = page[-1].seq


def _check_row(walk: _Walk, row: Row[Any], report: Report) -> None:
    report.entries += 1
    if row.seq > walk.expected_seq:
        first, last = walk.expected_seq, row.seq - 1
        report.add(first, "missing", f"{_span(first, last)} missing (deleted)")
    elif row.prev_hash != walk.prev_hash:
        report.add(
            row.seq,
            "link_mismatch",
            f"does not follow entry {row.seq - 1}: an entry was inserted before it, or entry {row.seq - 1} was "
            "rewritten",
        )
    key = walk.keys.get(row.key_id)
    if row.version != audit.VERSION:
        report.add(row.seq, "unknown_version", f"hash encoding version {row.version} is unknown to this verifier")
    elif key is None:
        report.add(
            row.seq, "unknown_key", f"made with chain key {row.key_id!r:.20}, which this master key does not give"
        )
    elif audit.entry_hash(key.secret, _entry(row), row.details) != row.entry_hash:
        report.add(row.seq, "hash_mismatch", "its content does not match its hash: edited, renumbered or forged")
    if walk.anchor is not None and row.seq == walk.anchor[0]:
        walk.anchor_seen = True
        if row.entry_hash != walk.anchor[1]:
            report.add(row.seq, "anchor_mismatch", "its hash differs from the anchored one: the trail was rewritten")
    walk.expected_seq, walk.prev_hash = row.seq + 1, row.entry_hash


def _check_end(walk: _Walk, head_seq: int, head_hash: str, report: Report) -> None:
    if walk.expected_seq <= head_seq:
        first = walk.expected_seq
        what = "every entry is" if first == 1 else _span(first, head_seq)
        report.add(first, "missing", f"{what} missing: the head says the trail ends at {head_seq} (deleted)")
    elif walk.prev_hash != head_hash:
        report.add(
            head_seq, "head_mismatch", "the head's hash differs from the last entry's: one of them was rewritten"
        )


def _span(first: int, last: int) -> str:
    return f"entry {first} is" if first == last else f"entries {first}..{last} are"


def _check_past_head(database: Database, head_seq: int, report: Report) -> None:
    """Entries beyond the head. Those that committed during the walk are legitimate: the head is read again
    *after* the entries, so an entry counts as past the head only if the head still ends before it."""
    with database.read() as connection:
        beyond = connection.execute(_PAST, {"after": head_seq}).scalars().all()
    if not beyond:
        return
    with database.read() as connection:
        now = connection.execute(_HEAD).first()
    end = now.last_seq if now is not None else head_seq
    for seq in beyond:
        if seq > end:
            report.add(seq, "past_head", f"numbered beyond the head ({end}): not appended by the audit writer")


def _check_anchor(walk: _Walk, report: Report) -> None:
    if walk.anchor is not None and not walk.anchor_seen:
        report.add(walk.anchor[0], "anchor_missing", "the anchored entry is gone: the trail was cut back or rewritten")


def _entry(row: Row[Any], *, with_details: bool = False) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        recorded_at=row.recorded_at,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        details=_details(row.details) if with_details else {},
        key_id=row.key_id,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
        version=row.version,
    )


def _details(text: str) -> dict[str, Any]:
    """The stored JSON object; an edited entry's may be anything, and listing it must still work."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"unreadable": text[:200]}


def entries(
    database: Database, *, since: str | None = None, action: str | None = None, limit: int = 100
) -> list[AuditEntry]:
    """The newest `limit` entries (at or after `since`, an ISO UTC time prefix such as 2026-11-28 or
    2026-11-28T20:00; of `action`, or of every action under it when it ends with '.'), oldest first."""
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if since:
        query = query.where(audit_log.c.recorded_at >= since)
    if action and action.endswith("."):
        query = query.where(audit_log.c.action.startswith(action, autoescape=True))
    elif action:
        query = query.where(audit_log.c.action == action)
    with database.read() as connection:
        rows = connection.execute(query).all()
    return [_entry(row, with_details=True) for row in reversed(rows)]
