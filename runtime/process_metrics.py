"""What every process of the stack says about itself (docs/metrics.md, "Processes" and "Datastores").

`start(process, registry)` is called once by each long-running process (gateway, workers, notify-edge) as it
starts. It writes `paygate_build_info`, counts garbage collections and samples the database and Redis pools
every `SAMPLE_INTERVAL_S` on a daemon thread, and makes the engines and Redis clients built afterwards timed
(runtime/datastore_metrics.py). CPU, memory and file descriptors are not sampled here: under `paygate serve` the
supervisor reads them from /proc/<pid> of each child at scrape time (runtime/process_series.py), since
prometheus_client's own ProcessCollector cannot work through multiprocess files; a process on its own (one
Kubernetes pod) registers that collector for itself, next to prometheus_client's standard ones.

Multiprocess modes are chosen per gauge: build info and pool use are `livemax`/`livesum`, so a dead process's
values vanish when the supervisor marks it dead (docs/metrics.md, "After a restart").
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import subprocess
import threading
import weakref
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, gc_collector, platform_collector, process_collector
from sqlalchemy import Engine

from runtime.datastore_metrics import DatastoreMetrics
from runtime.process_series import ProcSeries

REVISION_ENV = "PAYGATE_BUILD_REVISION"
SAMPLE_INTERVAL_S = 2.0
UNKNOWN = "unknown"

_current: ProcessMetrics | None = None


def worker_process(worker_id: str) -> str:
    """The `process` label of a worker: `worker-<id>`; `paygate serve` already names its workers worker-1…N."""
    return worker_id if worker_id.startswith("worker-") else f"worker-{worker_id}"


def build_revision() -> str:
    """PAYGATE_BUILD_REVISION (set in the image at build time), else the git commit of a source checkout (the
    development case: an editable install), else "unknown" (docs/metrics.md, "Build info")."""
    configured = os.environ.get(REVISION_ENV, "").strip()
    if configured:
        return configured[:64]
    source = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and revision else UNKNOWN


def build_labels() -> tuple[str, str, str]:
    """(version, revision, python) of the running code."""
    try:
        version = importlib.metadata.version("paygate")
    except importlib.metadata.PackageNotFoundError:
        version = UNKNOWN
    return version, build_revision(), platform.python_version()


def current() -> ProcessMetrics | None:
    return _current


class ProcessMetrics:
    def __init__(self, process: str, registry: CollectorRegistry | None) -> None:
        self.process = process
        self.datastores = DatastoreMetrics(registry, process)
        self.build_info = Gauge(
            "paygate_build_info",
            "1 for each process, labelled with the version, git revision and Python version it runs.",
            ("process", "version", "revision", "python"),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.gc_collections = Counter(
            "paygate_process_gc_collections",
            "Garbage collections of the Python interpreter, by generation.",
            ("process", "generation"),
            registry=registry,
        )
        self.db_pool = Gauge(
            "paygate_db_pool_connections",
            "Database connections of this process's SQLAlchemy pools, by state (checked_out, idle).",
            ("process", "state"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.redis_pool = Gauge(
            "paygate_redis_pool_connections",
            "Redis connections of this process's pools, by state (in_use, idle).",
            ("process", "state"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._redis_pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._gc_seen = [0, 0, 0]
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def add_engine(self, engine: Engine) -> None:
        self.datastores.instrument_engine(engine)
        with self._lock:
            self._engines.add(engine)

    def add_redis(self, client: Any) -> None:
        self.datastores.instrument_redis(client)
        with self._lock:
            self._redis_pools.add(client.connection_pool)

    def sample(self) -> None:
        """Bring the GC counts and the pool gauges up to date (on the sampler thread; also callable directly)."""
        for generation, stats in enumerate(gc.get_stats()[:3]):
            collections = int(stats.get("collections", 0))
            if collections > self._gc_seen[generation]:
                self.gc_collections.labels(self.process, str(generation)).inc(collections - self._gc_seen[generation])
                self._gc_seen[generation] = collections
        with self._lock:
            engines, pools = list(self._engines), list(self._redis_pools)
        checked_out = sum(_pool_count(engine.pool, "checkedout") for engine in engines)
        idle = sum(_pool_count(engine.pool, "checkedin") for engine in engines)
        self.db_pool.labels(self.process, "checked_out").set(checked_out)
        self.db_pool.labels(self.process, "idle").set(idle)
        in_use, available = _redis_counts(pools)
        self.redis_pool.labels(self.process, "in_use").set(in_use)
        self.redis_pool.labels(self.process, "idle").set(available)

    def run_sampler(self) -> None:
        self.sample()
        thread = threading.Thread(target=self._sample_until_stopped, name="metrics-sampler", daemon=True)
        thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _sample_until_stopped(self) -> None:
        while not self._stopped.wait(SAMPLE_INTERVAL_S):
            try:
                self.sample()
            except Exception:  # noqa: S112 - a failed sample must not end sampling; the next one retries
                continue


def _pool_count(pool: Any, method: str) -> int:
    count = getattr(pool, method, None)  # QueuePool has both; NullPool/StaticPool keep no count
    return int(count()) if callable(count) else 0


def _redis_counts(pools: list[Any]) -> tuple[int, int]:
    """(in use, idle) over redis-py pools, from their public `get_connection_count()`."""
    in_use = idle = 0
    for pool in pools:
        for count, attributes in pool.get_connection_count():
            state = attributes.get("db.client.connection.state")
            if state == "used":
                in_use += int(count)
            elif state == "idle":
                idle += int(count)
    return in_use, idle


def start(process: str, registry: CollectorRegistry | None) -> ProcessMetrics:
    """This process's build info, GC counts and pool gauges, and timing of the datastores it opens from now on.

    `registry` None: multiprocess mode (the supervisor adds /proc figures); else the process's own registry,
    which also gets prometheus_client's standard process, GC and platform collectors."""
    global _current  # noqa: PLW0603 - one per process, set at its start, read where engines and clients are made
    if _current is not None:
        _current.stop()
    metrics = ProcessMetrics(process, registry)
    metrics.build_info.labels(process, *build_labels()).set(1)
    if registry is not None:
        process_collector.ProcessCollector(registry=registry)
        gc_collector.GCCollector(registry=registry)
        platform_collector.PlatformCollector(registry=registry)
        registry.register(ProcSeries(lambda: [(process, "self")]))
    metrics.run_sampler()
    _current = metrics
    return metrics


def instrument_engine(engine: Engine) -> None:
    """Called by runtime.db for every engine it makes: timed and sampled once the process has started metrics."""
    if _current is not None:
        _current.add_engine(engine)


def instrument_redis(client: Any) -> Any:
    """Called by runtime.redis_support for every client it makes; returns the client."""
    if _current is not None:
        _current.add_redis(client)
    return client
