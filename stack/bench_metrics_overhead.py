"""What the datastore hooks cost per statement and per Redis command (docs/metrics.md, "Cost on the hot path").

Run `python -m stack.bench_metrics_overhead` (in `stack/`, which may import the server's modules).
It measures, in prometheus_client's multiprocess mode (as under
`paygate serve`: every observation writes to an mmap'ed file), the time of a point SELECT on a SQLite file through
a SQLAlchemy engine, a GET and a pipelined EVALSHA round trip on a private redis-server, each without and with the
hooks of runtime/datastore_metrics.py, interleaved over several rounds; it prints the medians of CPU time per
operation (this process only: the Redis server's own time and the wait for a core are left out) and their
difference.
A figure, not an assertion: nothing here fails on a slow machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUNDS = 41
SQL_OPS = 20_000
REDIS_OPS = 20_000
SCRIPT_BATCH = 8


def _per_op_us(run: Callable[[], object], count: int) -> float:
    """CPU time of this process per call: on a shared machine, time spent waiting for a core is not the hooks'."""
    started = time.process_time()
    for _ in range(count):
        run()
    return (time.process_time() - started) / count * 1e6


def _compare(name: str, plain: Callable[[], object], timed: Callable[[], object], count: int) -> None:
    """Many short interleaved slices, so a change of load on the machine falls on both sides alike."""
    without, with_hooks = [], []
    for _ in range(ROUNDS):
        without.append(_per_op_us(plain, count // ROUNDS))
        with_hooks.append(_per_op_us(timed, count // ROUNDS))
    base, hooked = statistics.median(without), statistics.median(with_hooks)
    print(f"{name:<38} without {base:8.1f} µs   with {hooked:8.1f} µs   added {hooked - base:+6.1f} µs")


def _sql(directory: Path, metrics: Any) -> None:
    from sqlalchemy import create_engine, text  # noqa: PLC0415

    url = f"sqlite:///{directory / 'bench.sqlite'}"
    plain, timed = create_engine(url), create_engine(url)
    metrics.instrument_engine(timed)
    with plain.begin() as connection:
        connection.execute(text("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)"))
        connection.execute(text("INSERT INTO accounts VALUES (1, 100)"))
    query = text("SELECT balance FROM accounts WHERE id = :id")
    with plain.connect() as one, timed.connect() as other:
        _compare(
            "SQLite point SELECT (engine)",
            lambda: one.execute(query, {"id": 1}).scalar(),
            lambda: other.execute(query, {"id": 1}).scalar(),
            SQL_OPS,
        )


def _redis(directory: Path, metrics: Any) -> None:
    import redis  # noqa: PLC0415

    from runtime.redis_support import EmbeddedRedis, ScriptCall, run_scripts  # noqa: PLC0415

    server = EmbeddedRedis(directory / "redis.sock", directory)
    url = server.start()
    try:
        plain, timed = redis.Redis.from_url(url), metrics.instrument_redis(redis.Redis.from_url(url))
        plain.set("bench", "1")
        _compare("Redis GET", lambda: plain.get("bench"), lambda: timed.get("bench"), REDIS_OPS)
        script = plain.register_script("return redis.call('GET', KEYS[1])")
        from runtime.datastore_metrics import name_script  # noqa: PLC0415

        name_script(script, "bench_get")
        calls: list[ScriptCall] = [(script, ["bench"], [])] * SCRIPT_BATCH
        run_scripts(plain, calls)
        _compare(
            f"Redis pipeline of {SCRIPT_BATCH} EVALSHA",
            lambda: run_scripts(plain, calls),
            lambda: run_scripts(timed, calls),
            REDIS_OPS // 4,
        )
    finally:
        server.stop()


def _observe_only(metrics: Any) -> None:
    _compare(
        "histogram observe alone",
        lambda: None,
        lambda: metrics.observe_statement("select", 0.0001),
        SQL_OPS * 5,
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="paygate-bench-metrics-") as name:
        directory = Path(name)
        (directory / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory / "metrics")
        from runtime.datastore_metrics import DatastoreMetrics  # noqa: PLC0415 - after the directory is set

        metrics = DatastoreMetrics(None, "bench")
        print(f"python {sys.version.split()[0]}, multiprocess files in {directory / 'metrics'}, median of {ROUNDS}")
        _observe_only(metrics)
        _sql(directory, metrics)
        _redis(directory, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
