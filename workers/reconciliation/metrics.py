"""`paygate_reconciliation_items_total{channel,kind}`: the items each run found, on the stack's /metrics.

`paygate reconcile` is a short-lived command, not one of the stack's processes, so it cannot be scraped. It
writes its counter in prometheus_client's multiprocess mode instead (docs/architecture.md, "Observability"):
into PROMETHEUS_MULTIPROC_DIR when set, else into the metrics/ directory of the `serve` stack using the same data
dir. The supervisor's /metrics aggregates every file there, those of exited processes included, so the counts
appear with the stack's own metrics and add up over runs (they restart at zero with the stack, like any counter).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, values

from runtime.metrics import MULTIPROC_ENV

NAME = "paygate_reconciliation_items_total"


def multiprocess_dir(stack_metrics_dir: Path) -> str | None:
    """Where the counter goes: PROMETHEUS_MULTIPROC_DIR, or the running stack's metrics directory, or nowhere."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        return configured
    return str(stack_metrics_dir) if stack_metrics_dir.is_dir() else None


def export_items(channel: str, counts: Mapping[str, int], stack_metrics_dir: Path) -> str | None:
    """Add a run's item counts (every kind, zeros included, so each series exists after a clean run); returns the
    multiprocess directory written, or None when there is none (the counter then lives only in this process)."""
    directory = multiprocess_dir(stack_metrics_dir)
    registry: CollectorRegistry | None = CollectorRegistry()
    if directory is not None:
        os.environ[MULTIPROC_ENV] = directory
        # prometheus_client picks its value class when first imported; switch it to the file-backed one (its
        # documented hook), since this process learns the directory only now.
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        registry = None  # the files are the registry: the stack's collector reads them
    counter = Counter(NAME, "Reconciliation items found, by channel and kind.", ("channel", "kind"), registry=registry)
    for kind, found in counts.items():
        counter.labels(channel, kind).inc(found)
    return directory
