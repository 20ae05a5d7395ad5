"""Statement and command latency of the databases and Redis, per process (docs/metrics.md, "Datastores").

Hooks at the one place each library hands work to the network: an engine's dialect `do_execute*` methods time
every statement it sends; a Redis client made by `runtime.redis_support` has its `execute_command` and
its pipelines' `execute` timed on the instance (whatever class the client is, so any way of connecting keeps it).
Labels stay bounded: a statement is its first keyword (select|insert|update|delete|other); a Redis command is its
name, a Lua script the name it was registered under (`name_script`), a pipeline that mixes them `pipeline`.

The series' children are resolved once per label value and kept, so a statement pays one dict lookup and one
histogram observation (two mmap writes in multiprocess mode; docs/metrics.md gives the measured cost).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import Engine

from runtime.metrics import LATENCY_BUCKETS_S

# Statements and commands are faster than calls: start a decade lower than the call buckets.
DATASTORE_BUCKETS_S = (0.00005, 0.0001, 0.00025, *LATENCY_BUCKETS_S)
STATEMENT_KINDS = ("select", "insert", "update", "delete")
PIPELINE = "pipeline"
_SCRIPT_COMMANDS = frozenset({"EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO"})
_STARTED = "_paygate_statements_timed"
MAX_REMEMBERED_STATEMENTS = 4096
_kinds: dict[str, str] = {}

# sha1 of a registered Lua script → the name its caller gave it. Filled as scripts are registered (a few dozen
# at most, all ours), read on every EVALSHA.
_script_names: dict[str, str] = {}


def name_script(script: Any, name: str) -> Any:
    """Record the name an EVALSHA of `script` (a redis-py Script) is counted under; returns the script."""
    _script_names[str(script.sha)] = name
    return script


def statement_kind(statement: str) -> str:
    """select|insert|update|delete|other. Our statements are prebuilt, so the same strings recur: remembered."""
    kind = _kinds.get(statement)
    if kind is None:
        head = statement.lstrip()[:8].lower()
        kind = next((kind for kind in STATEMENT_KINDS if head.startswith(kind)), "other")
        if len(_kinds) < MAX_REMEMBERED_STATEMENTS:
            _kinds[statement] = kind
    return kind


def command_label(args: Sequence[Any]) -> str:
    """The bounded label of one Redis command: its name, or the registered name of the script it runs."""
    if not args:
        return "other"
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    name = name.upper()
    if name in _SCRIPT_COMMANDS and len(args) > 1:
        sha = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
        return _script_names.get(sha, name)
    return name.split(" ", 1)[0]


def pipeline_label(commands: Sequence[Any]) -> str:
    """One round trip of a pipeline: the label its commands share, else `pipeline`."""
    labels = {command_label(entry[0]) for entry in commands}
    return labels.pop() if len(labels) == 1 else PIPELINE


class DatastoreMetrics:
    """`paygate_db_statement_seconds{process,statement}` and `paygate_redis_command_seconds{process,command}`."""

    def __init__(self, registry: CollectorRegistry | None, process: str) -> None:
        self.process = process
        self.statement_seconds = Histogram(
            "paygate_db_statement_seconds",
            "Database statements by first keyword (seconds), from the driver's execute to its return.",
            ("process", "statement"),
            buckets=DATASTORE_BUCKETS_S,
            registry=registry,
        )
        self.command_seconds = Histogram(
            "paygate_redis_command_seconds",
            "Redis round trips by command or Lua script name (seconds); a mixed pipeline counts as `pipeline`.",
            ("process", "command"),
            buckets=DATASTORE_BUCKETS_S,
            registry=registry,
        )
        self._statements = {kind: self.statement_seconds.labels(process, kind) for kind in (*STATEMENT_KINDS, "other")}
        self._commands: dict[str, Any] = {}

    def observe_statement(self, kind: str, seconds: float) -> None:
        self._statements[kind].observe(seconds)

    def observe_command(self, label: str, seconds: float) -> None:
        child = self._commands.get(label)
        if child is None:
            child = self._commands[label] = self.command_seconds.labels(self.process, label)
        child.observe(seconds)

    # -- SQLAlchemy ---------------------------------------------------------------------------------------

    def instrument_engine(self, engine: Engine) -> None:
        """Time every statement the engine sends (executemany counts once: one round trip).

        The dialect's `do_execute*` methods are wrapped on this engine's own dialect instance: they are the one
        place SQLAlchemy hands a statement to the driver. Its `before/after_cursor_execute` events would do the
        same through the event dispatcher, which alone cost ~20 µs a statement here (docs/benchmarks.md)."""
        dialect: Any = engine.dialect
        if getattr(dialect, _STARTED, False):
            return
        setattr(dialect, _STARTED, True)
        observe = self.observe_statement
        execute, many, no_params = dialect.do_execute, dialect.do_executemany, dialect.do_execute_no_params

        def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
            started = time.perf_counter()
            try:
                return execute(cursor, statement, parameters, context)
            finally:
                observe(statement_kind(statement), time.perf_counter() - started)

        def do_executemany(cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
            started = time.perf_counter()
            try:
                return many(cursor, statement, parameters, context)
            finally:
                observe(statement_kind(statement), time.perf_counter() - started)

        def do_execute_no_params(cursor: Any, statement: str, context: Any = None) -> Any:
            started = time.perf_counter()
            try:
                return no_params(cursor, statement, context)
            finally:
                observe(statement_kind(statement), time.perf_counter() - started)

        dialect.do_execute, dialect.do_executemany = do_execute, do_executemany
        dialect.do_execute_no_params = do_execute_no_params

    # -- redis-py -----------------------------------------------------------------------------------------

    def instrument_redis(self, client: Any) -> Any:
        """Time `execute_command` and pipelines of a sync or asyncio redis-py client; returns the client."""
        is_async = _is_async(client.execute_command)
        client.execute_command = (_timed_async if is_async else _timed)(client.execute_command, self)
        make_pipeline = client.pipeline

        @functools.wraps(make_pipeline)
        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make_pipeline(*args, **kwargs)
            run = pipe.execute
            pipe.execute = (_timed_pipeline_async if is_async else _timed_pipeline)(run, pipe, self)
            return pipe

        client.pipeline = pipeline
        return client


def _is_async(function: Callable[..., Any]) -> bool:
    import inspect  # noqa: PLC0415 - only at instrumentation time

    return inspect.iscoroutinefunction(function)


def _timed(execute: Callable[..., Any], metrics: DatastoreMetrics) -> Callable[..., Any]:
    def execute_command(*args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(*args, **options)
        finally:
            metrics.observe_command(command_label(args), time.perf_counter() - started)

    return execute_command


def _timed_async(execute: Callable[..., Any], metrics: DatastoreMetrics) -> Callable[..., Any]:
    async def execute_command(*args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return await execute(*args, **options)
        finally:
            metrics.observe_command(command_label(args), time.perf_counter() - started)

    return execute_command


def _timed_pipeline(run: Callable[..., Any], pipe: Any, metrics: DatastoreMetrics) -> Callable[..., Any]:
    def execute(*args: Any, **kwargs: Any) -> Any:
        label = pipeline_label(pipe.command_stack)
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            metrics.observe_command(label, time.perf_counter() - started)

    return execute


def _timed_pipeline_async(run: Callable[..., Any], pipe: Any, metrics: DatastoreMetrics) -> Callable[..., Any]:
    async def execute(*args: Any, **kwargs: Any) -> Any:
        label = pipeline_label(pipe.command_stack)
        started = time.perf_counter()
        try:
            return await run(*args, **kwargs)
        finally:
            metrics.observe_command(label, time.perf_counter() - started)

    return execute
