"""The /metrics of `paygate serve` (docs/metrics.md, "Where the series come from"): the children's multiprocess
files, plus `/proc` of every process of the stack and the supervisor's own build info (runtime/process_series.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from runtime import process_metrics
from runtime.process_series import stack_registry

if TYPE_CHECKING:
    from stack.supervisor import Supervisor


def metrics_registry(supervisor: Supervisor, env: dict[str, str]) -> CollectorRegistry:
    """The registry behind the stack's /metrics. The revision is found once, here, and handed to the children in
    `env`, so none of them runs git (docs/metrics.md, "Build info")."""
    build = process_metrics.build_labels()
    env[process_metrics.REVISION_ENV] = build[1]
    return stack_registry(str(supervisor.settings.metrics_dir), lambda: live_processes(supervisor), build)


def live_processes(supervisor: Supervisor) -> list[tuple[str, int | str]]:
    """(role, pid) of every process of the stack now running, read at scrape time (on the metrics server's thread:
    it only reads what the supervisor's loop sets, and reaps nothing)."""
    found: list[tuple[str, int | str]] = [("supervisor", os.getpid())]
    redis = supervisor.redis.process if supervisor.redis is not None else None
    if redis is not None and redis.returncode is None:
        found.append(("redis", redis.pid))
    for child in list(supervisor.children):
        process = child.process
        if process is not None and process.returncode is None:
            found.append((child.name, process.pid))
    return found
