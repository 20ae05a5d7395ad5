"""The datastore and background-job metrics against real databases and a real Redis (docs/metrics.md)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from runtime.datastore_metrics import DatastoreMetrics, name_script
from runtime.db import Database
from runtime.job_metrics import EXPIRY_SWEEPER, BackgroundJobMetrics
from runtime.metrics import WorkerMetrics
from runtime.process_metrics import ProcessMetrics
from runtime.redis_support import run_scripts
from runtime.settings import Settings
from tests.support import REPO_ROOT, Clock, private_database
from workers.domain.types import Caller, Method, PaymentStatus, TopUpCommand
from workers.operations import expiry
from workers.service import PaymentService
from workers.wiring import build_service


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_statements_are_timed_by_their_first_keyword(database: Database, registry: CollectorRegistry) -> None:
    metrics = DatastoreMetrics(registry, "test")
    metrics.instrument_engine(database.writer)
    table = f"metrics_probe_{uuid.uuid4().hex[:8]}"
    with database.writer.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER)"))
        connection.execute(text(f"INSERT INTO {table} (id, n) VALUES (1, 1)"))
        connection.execute(text(f"  update {table} SET n = 2 WHERE id = 1"))
        assert connection.execute(text(f"SELECT n FROM {table} WHERE id = 1")).scalar() == 2
        connection.execute(text(f"DELETE FROM {table}"))
        connection.execute(text(f"DROP TABLE {table}"))
    name = "paygate_db_statement_seconds_count"
    for kind in ("insert", "update", "select", "delete"):
        assert count(registry, name, process="test", statement=kind) >= 1, kind
    assert count(registry, name, process="test", statement="other") >= 2  # CREATE, DROP (and BEGIN on SQLite)


def test_redis_commands_scripts_and_pipelines_are_labelled(redis_url: str, registry: CollectorRegistry) -> None:
    metrics = DatastoreMetrics(registry, "test")
    client = metrics.instrument_redis(redis.Redis.from_url(redis_url))
    key = f"metrics-probe:{uuid.uuid4().hex}"
    try:
        client.set(key, "1")
        client.get(key)
        script = name_script(client.register_script("return redis.call('GET', KEYS[1])"), "probe_get")
        assert script(keys=[key]) == b"1"
        assert run_scripts(client, [(script, [key], []), (script, [key], [])]) == [b"1", b"1"]
        mixed = client.pipeline(transaction=False)
        mixed.get(key).exists(key)
        mixed.execute()
    finally:
        client.delete(key)
        client.close()
    name = "paygate_redis_command_seconds_count"
    assert count(registry, name, process="test", command="SET") == 1
    assert count(registry, name, process="test", command="GET") == 1
    assert count(registry, name, process="test", command="probe_get") >= 2  # the call, then one pipelined trip
    assert count(registry, name, process="test", command="pipeline") == 1
    assert count(registry, name, process="test", command="EXISTS") == 0  # inside the pipeline, not a trip of its own


def test_the_asyncio_client_is_timed_too(redis_url: str, registry: CollectorRegistry) -> None:
    metrics = DatastoreMetrics(registry, "test")

    async def run() -> None:
        client = metrics.instrument_redis(aioredis.Redis.from_url(redis_url))
        try:
            await client.get(f"metrics-probe:{uuid.uuid4().hex}")
            pipe = client.pipeline(transaction=False)
            pipe.get("a").get("b")
            await pipe.execute()
        finally:
            await client.aclose()

    asyncio.run(run())
    assert count(registry, "paygate_redis_command_seconds_count", process="test", command="GET") == 2


def test_pool_gauges_see_a_checked_out_connection(database: Database, redis_url: str) -> None:
    registry = CollectorRegistry()
    process = ProcessMetrics("test", registry)
    process.add_engine(database.writer)
    client = redis.Redis.from_url(redis_url)
    process.add_redis(client)
    client.ping()
    with database.writer.connect():
        process.sample()
        assert count(registry, "paygate_db_pool_connections", process="test", state="checked_out") == 1
    process.sample()
    assert count(registry, "paygate_db_pool_connections", process="test", state="checked_out") == 0
    assert count(registry, "paygate_db_pool_connections", process="test", state="idle") >= 1
    assert count(registry, "paygate_redis_pool_connections", process="test", state="idle") == 1
    client.close()
    assert count(registry, "paygate_process_gc_collections_total", process="test", generation="0") > 0


def test_a_round_counts_ok_or_error_and_the_error_goes_on(registry: CollectorRegistry) -> None:
    jobs = BackgroundJobMetrics(registry)
    with jobs.round("janitor"):
        pass
    with pytest.raises(RuntimeError), jobs.round("janitor"):
        raise RuntimeError("database down")
    assert count(registry, "paygate_background_runs_total", background_job="janitor", outcome="ok") == 1
    assert count(registry, "paygate_background_runs_total", background_job="janitor", outcome="error") == 1
    assert count(registry, "paygate_background_run_seconds_count", background_job="janitor") == 2
    assert count(registry, "paygate_background_last_success_timestamp_seconds", background_job="janitor") > 0


@pytest.fixture
def swept(
    tmp_path: Path, redis_url: str, redis_prefix: str, registry: CollectorRegistry
) -> Iterator[tuple[PaymentService, Clock]]:
    clock = Clock()
    metrics = WorkerMetrics.create(registry)
    settings = Settings(
        channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, sandbox_confirmation="deferred"
    )
    with private_database(None, tmp_path) as database:
        service = build_service(settings, database, metrics, clock=clock)
        yield service, clock
        service.close()


def test_the_sweeper_reports_how_overdue_its_oldest_payment_is(
    swept: tuple[PaymentService, Clock], registry: CollectorRegistry
) -> None:
    service, clock = swept
    caller = Caller(owner="metrics", key_id="key_m", request_id="req_m")
    pending = service.top_up(caller, TopUpCommand(f"t-{uuid.uuid4().hex[:8]}", "learner", 500, "CNY", Method.SANDBOX))
    assert pending.status is PaymentStatus.PENDING
    assert expiry.overdue_s(service.context, 900) == 0.0
    clock.now += timedelta(seconds=1_000)
    assert expiry.overdue_s(service.context, 900) == pytest.approx(100.0, abs=1.0)
    assert service.sweep_once(ttl_s=900) == 1
    lag = registry.get_sample_value("paygate_background_lag_seconds", {"background_job": EXPIRY_SWEEPER})
    assert lag == 0.0  # set, to 0
    assert count(registry, "paygate_background_runs_total", background_job=EXPIRY_SWEEPER, outcome="ok") == 1


def test_a_process_on_its_own_exports_the_standard_collectors_and_ours() -> None:
    """A pod runs one process with its own registry (no multiprocess directory): prometheus_client's standard
    process, GC and platform series, plus the paygate_process_* and build info of that process."""
    program = (
        "from prometheus_client import CollectorRegistry, generate_latest\n"
        "from runtime import process_metrics\n"
        "registry = CollectorRegistry()\n"
        "process_metrics.start('worker-7', registry)\n"
        "print(generate_latest(registry).decode())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PAYGATE_BUILD_REVISION"] = "abc123"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=True
    )
    text = done.stdout
    for line in (
        "process_cpu_seconds_total ",
        "python_gc_objects_collected_total{",
        "python_info{",
        'paygate_process_cpu_seconds_total{process="worker-7"} ',
        'paygate_process_open_fds{process="worker-7"} ',
        'paygate_process_gc_collections_total{generation="0",process="worker-7"} ',
        'paygate_db_pool_connections{process="worker-7",state="idle"} 0.0',
    ):
        assert line in text, line
    build = re.search(r"^paygate_build_info\{(.*)\} 1\.0$", text, re.MULTILINE)
    assert build is not None and 'revision="abc123"' in build.group(1) and 'process="worker-7"' in build.group(1)
