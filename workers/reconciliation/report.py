"""A reconciliation run as an operator reads it (text) and as a machine does (JSON); docs/reconciliation.md."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from workers.reconciliation.fetch import DAY_ZONES
from workers.reconciliation.match import ItemKind
from workers.store.reconciliation import Run, StoredItem


def counts(run: Run) -> dict[str, int]:
    """Items per kind, every kind present (zero included), in the documented order."""
    found = Counter(stored.item.kind for stored in run.items)
    return {kind.value: found[kind] for kind in ItemKind}


def _amount(value: int | None) -> str:
    return "-" if value is None else str(value)


def _reference(stored: StoredItem) -> str:
    item = stored.item
    if item.out_refund_no:
        return f"{item.out_refund_no} (of {item.out_trade_no or '?'})"
    return item.out_trade_no


def render_text(run: Run) -> str:
    zone = next((str(z) for m, z in DAY_ZONES.items() if m.value == run.channel), "")
    lines = [
        f"reconcile {run.channel} {run.day.isoformat()} ({zone} day), run {run.run_id}",
        f"  statement lines {run.lines}, matched {run.matched}, unmatched {run.unmatched}",
    ]
    lines.extend(f"  {kind:<22} {n}" for kind, n in counts(run).items() if n)
    if run.items:
        lines.append("")
        lines.append(f"  {'item':<30} {'kind':<20} {'record':<7} {'ours':>12} {'theirs':>12} cur  reference")
        for stored in run.items:
            item = stored.item
            lines.append(
                f"  {stored.item_id:<30} {item.kind.value:<20} {item.record.value:<7} {_amount(item.ours_minor):>12} "
                f"{_amount(item.theirs_minor):>12} {item.currency:<4} {_reference(stored)}"
            )
            lines.append(f"  {'':<30} {item.detail}")
        lines.append("")
        lines.append("reconcile: UNMATCHED; book a difference with `paygate reconcile correct ITEM --reason TEXT`")
    else:
        lines.append("reconcile: all matched")
    return "\n".join(lines)


def as_json(run: Run) -> str:
    document: dict[str, Any] = {
        "run_id": run.run_id,
        "channel": run.channel,
        "day": run.day.isoformat(),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "lines": run.lines,
        "matched": run.matched,
        "unmatched": run.unmatched,
        "counts": counts(run),
        "items": [
            {
                "item_id": stored.item_id,
                "kind": stored.item.kind.value,
                "record": stored.item.record.value,
                "out_trade_no": stored.item.out_trade_no,
                "out_refund_no": stored.item.out_refund_no,
                "currency": stored.item.currency,
                "ours_minor": stored.item.ours_minor,
                "theirs_minor": stored.item.theirs_minor,
                "difference_minor": stored.item.difference_minor,
                "detail": stored.item.detail,
            }
            for stored in run.items
        ],
    }
    return json.dumps(document, ensure_ascii=False)
