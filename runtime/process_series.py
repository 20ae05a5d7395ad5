"""CPU, memory and file descriptors of each process of a stack, read from /proc at scrape time (docs/metrics.md).

prometheus_client's ProcessCollector reads /proc/<pid> of one process and names its figures `process_*`; it cannot
work through multiprocess files. So the one /metrics endpoint of `paygate serve` (the supervisor) runs it for each
live child by pid and relabels what it reads as `paygate_process_*{process="<role>"}`. Only live processes are
read, so a killed child's figures disappear with it and its restarted successor's start afresh
(`paygate_process_start_time_seconds` tells the two apart). A process on its own reads itself the same way.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# prometheus_client's family name → ours (its figures, our prefix and a `process` label); virtual memory is left
# out on purpose: resident memory is the figure that matters and the one the dashboards show.
PROC_FAMILIES = {
    "process_cpu_seconds": ("paygate_process_cpu_seconds", "CPU time, user and system (seconds)."),
    "process_resident_memory_bytes": ("paygate_process_resident_memory_bytes", "Resident memory (bytes)."),
    "process_open_fds": ("paygate_process_open_fds", "Open file descriptors."),
    "process_max_fds": ("paygate_process_max_fds", "The limit on open file descriptors."),
    "process_start_time_seconds": ("paygate_process_start_time_seconds", "Start time (seconds since the epoch)."),
}
GC_FAMILY = "paygate_process_gc_collections"
BUILD_INFO_FAMILY = "paygate_build_info"

Roles = Callable[[], Sequence[tuple[str, int | str]]]


class ProcSeries(Collector):
    """`paygate_process_*{process}` for each (role, pid) that `roles()` names at scrape time."""

    def __init__(self, roles: Roles, proc: str = "/proc") -> None:
        self._roles = roles
        self._proc = proc

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for process, pid in self._roles():
            reader = ProcessCollector(pid=functools.partial(str, pid), proc=self._proc, registry=None)
            for family in reader.collect():
                ours = PROC_FAMILIES.get(family.name)
                if ours is None or not family.samples:
                    continue
                name, documentation = ours
                target = families.get(name)
                if target is None:
                    kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                    target = families[name] = kind(name, documentation, labels=["process"])
                target.add_metric([process], family.samples[0].value)  # type: ignore[attr-defined]
        return list(families.values())


class SupervisorSeries(Collector):
    """The stack's /metrics: every child's multiprocess files, plus the supervisor's own build info and GC counts
    merged into the same families (a family may appear only once in an exposition), plus /proc of every process."""

    def __init__(self, files: Collector, roles: Roles, build: tuple[str, str, str]) -> None:
        self._files = files
        self._proc = ProcSeries(roles)
        self._build = build

    def collect(self) -> Iterable[Metric]:
        families = {family.name: family for family in self._files.collect()}
        info = families.get(BUILD_INFO_FAMILY) or GaugeMetricFamily(
            BUILD_INFO_FAMILY, "Build of each process.", labels=["process", "version", "revision", "python"]
        )
        info.add_sample(
            BUILD_INFO_FAMILY,
            dict(zip(("process", "version", "revision", "python"), ("supervisor", *self._build), strict=True)),
            1.0,
        )
        families[BUILD_INFO_FAMILY] = info
        collections = families.get(GC_FAMILY) or CounterMetricFamily(
            GC_FAMILY, "Garbage collections by generation.", labels=["process", "generation"]
        )
        for generation, stats in enumerate(gc.get_stats()[:3]):
            labels = {"process": "supervisor", "generation": str(generation)}
            collections.add_sample(f"{GC_FAMILY}_total", labels, float(stats.get("collections", 0)))
        families[GC_FAMILY] = collections
        return [*families.values(), *self._proc.collect()]


def stack_registry(multiprocess_dir: str, roles: Roles, build: tuple[str, str, str]) -> CollectorRegistry:
    """The registry behind `paygate serve`'s /metrics: the children's files, merged with the supervisor's own."""
    registry = CollectorRegistry()
    files = MultiProcessCollector(None, path=multiprocess_dir)
    registry.register(SupervisorSeries(files, roles, build))
    return registry
