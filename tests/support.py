"""Test infrastructure on real components: Redis servers, databases and `paygate serve` stacks.

- Redis: PAYGATE_TEST_REDIS_URL when set, else a private redis-server (the same embedded server `serve` uses).
- Databases: a fresh SQLite file always; a fresh PostgreSQL / MariaDB database when PAYGATE_TEST_POSTGRES_URL /
  PAYGATE_TEST_MYSQL_URL name a server. Each throwaway database is dropped when the session ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from paygate.client import PaygateClient
from runtime.db import Database, normalize_url, upgrade

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "PAYGATE_TEST_POSTGRES_URL"
MYSQL_ENV = "PAYGATE_TEST_MYSQL_URL"
REDIS_ENV = "PAYGATE_TEST_REDIS_URL"
STARTUP_POLLS = 2_400  # x 0.05 s


def buf_binary() -> str:
    """The buf CLI (proto linter and `buf curl`, a Go gRPC client), or skip the test."""
    import pytest  # noqa: PLC0415 - support.py is also imported by the benchmark, outside pytest

    local = REPO_ROOT / ".venv/npm/node_modules/.bin/buf"
    found = shutil.which("buf") or (str(local) if local.exists() else None)
    if found is None:
        pytest.skip("buf is not installed (make install puts it in .venv/npm when npm is available)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    """A service's clock, moved by the test: what depends on time (expiry, retry delays) must not be waited for."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def wait_until(predicate, *, attempts: int, interval_s: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll a bounded number of times; the bound is a count, not a timing assertion."""
    for _ in range(attempts):
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what} did not happen after {attempts} attempts")


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


# -- throwaway databases ---------------------------------------------------------------------------------


def create_throwaway_database(server_url: str) -> str:
    """Create an empty database on the server named by `server_url` and return its URL."""
    url = make_url(normalize_url(server_url))
    name = f"paygate_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_throwaway_database(database_url: str) -> None:
    url = make_url(database_url)
    name = url.database
    assert name and name.startswith("paygate_t_"), name
    admin_database = "test"
    engine = create_engine(url.set(database=admin_database), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        if url.get_backend_name() == "postgresql":
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        else:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    engine.dispose()


@contextmanager
def private_database(server_url: str | None, directory: Path) -> Iterator[Database]:
    """A migrated, empty database of a test module's own, dropped afterwards: a throwaway database on the server
    of `server_url`, or with None a SQLite file in `directory`. For tests that read a whole table (the audit
    trail, a day of reconciliation, every sealed secret), where other tests' rows would be in the way."""
    if server_url is None:
        url, drop = f"sqlite:///{directory / 'private.sqlite3'}", None
    else:
        url = drop = create_throwaway_database(server_url)
    database = Database(url)
    try:
        upgrade(database)
        yield database
    finally:
        database.dispose()
        if drop:
            drop_throwaway_database(drop)


# -- a real `paygate serve` --------------------------------------------------------------------------------


@dataclass
class Stack:
    data_dir: Path
    listen: str
    metrics_listen: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    notify_listen: str = "off"  # the notification edge, when the stack runs channels
    sim_listen: str = "off"  # the channel simulator, when the stack runs channels
    tls: bool = True  # the gateway serves TLS with the dev certificates serve made (False: --plaintext)

    # -- calling it: over TLS with the stack's dev CA, or plaintext for a --plaintext stack ---------------------

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_file(self) -> str | None:
        """The dev CA that signed the gateway's certificate (for processes that make their own client), or None."""
        return str(self.tls_dir / "ca.pem") if self.tls else None

    def channel_credentials(self, client_cert: str | None = None) -> grpc.ChannelCredentials:
        """Trust the stack's dev CA; with `client_cert` ("caller"), present that dev certificate too."""
        root = (self.tls_dir / "ca.pem").read_bytes()
        if client_cert is None:
            return grpc.ssl_channel_credentials(root)
        key = (self.tls_dir / f"{client_cert}.key").read_bytes()
        return grpc.ssl_channel_credentials(root, key, (self.tls_dir / f"{client_cert}.pem").read_bytes())

    def channel(self, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        if not self.tls:
            return grpc.insecure_channel(self.listen, options=options)
        return grpc.secure_channel(self.listen, self.channel_credentials(), options=options)

    def aio_channel(self, options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
        if not self.tls:
            return grpc.aio.insecure_channel(self.listen, options=options)
        return grpc.aio.secure_channel(self.listen, self.channel_credentials(), options=options)

    def gateway_tls_env(self) -> dict[str, str]:
        """The TLS variables for another `paygate gateway` process in front of this stack's workers: the dev
        public certificate (callers verify it with `channel_credentials()`) and the gateway's client certificate
        for the workers' mutual TLS. Empty for a --plaintext stack."""
        if not self.tls:
            return {}
        return {
            "PAYGATE_TLS_CERT": str(self.tls_dir / "gateway.pem"),
            "PAYGATE_TLS_KEY": str(self.tls_dir / "gateway.key"),
            "PAYGATE_INTERNAL_TLS_CA": str(self.tls_dir / "internal-ca.pem"),
            "PAYGATE_INTERNAL_TLS_CERT": str(self.tls_dir / "gateway-client.pem"),
            "PAYGATE_INTERNAL_TLS_KEY": str(self.tls_dir / "gateway-client.key"),
        }

    def client(self, key_id: str, secret: str, **kwargs: object) -> PaygateClient:
        """A signing client for this stack's gateway, over TLS when the stack serves it."""
        credentials = self.channel_credentials() if self.tls else None
        return PaygateClient(self.listen, key_id, secret, credentials=credentials, **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stack", *args, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def create_key(self, name: str = "tests", scopes: str = "*") -> tuple[str, str]:
        result = self.cli("keys", "create", "--name", name, "--scopes", scopes, "--json")
        assert result.returncode == 0, result.stderr
        created = json.loads(result.stdout)
        return created["key_id"], created["secret"]

    def state(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.data_dir / "run" / "state.json").read_text())

    def worker_pid(self, worker_id: str) -> int | None:
        try:
            return self.state()["children"][worker_id]["pid"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def healthy_workers(self) -> int:
        """How many workers the gateway has in its rotation, read from /metrics as an operator would."""
        text = self.metrics_text()
        return sum(
            1
            for line in text.splitlines()
            if line.startswith("paygate_worker_healthy{") and float(line.rsplit(" ", 1)[1]) == 1.0
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return self.process.returncode


def start_stack(
    data_dir: Path,
    *,
    workers: int = 3,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    channels: bool = False,
    tls: bool = True,
) -> Stack:
    """`paygate serve` in a real process. With `channels`, also the notification edge and the channel simulator
    (each on a free port); without, neither runs, and only WALLET and SANDBOX payments are offered. With `tls`
    (the default, as `serve` itself) the gateway serves TLS and workers mutual TLS with the dev certificates serve
    makes under the data dir; without, `--plaintext`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    listen = f"127.0.0.1:{free_port()}"
    metrics_listen = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env["PAYGATE_LOG_LEVEL"] = "INFO"
    notify_listen = f"127.0.0.1:{free_port()}" if channels else "off"
    sim_listen = f"127.0.0.1:{free_port()}" if channels else "off"
    env["PAYGATE_NOTIFY_LISTEN"] = notify_listen
    env["PAYGATE_CHANNEL_SIM_LISTEN"] = sim_listen
    if database_url:
        env["PAYGATE_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stack",
                "serve",
                "--workers",
                str(workers),
                "--listen",
                listen,
                "--metrics-listen",
                metrics_listen,
                "--data-dir",
                str(data_dir),
                *([] if tls else ["--plaintext"]),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    stack = Stack(data_dir, listen, metrics_listen, process, log_path, env, notify_listen, sim_listen, tls)
    ready = data_dir / "run" / "gateway.ready"

    def is_ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"paygate serve exited with {process.returncode}:\n{stack.log()}")
        return ready.exists()

    # A bound on polls (2 minutes at most), not a timing assertion: on a loaded 2-core machine starting the
    # gateway, the workers, Redis and the simulator (each a Python start-up of ~2 s of CPU) can take tens of
    # seconds; the bound only ends a stack that never comes up.
    try:
        wait_until(is_ready, attempts=STARTUP_POLLS, what="paygate serve ready")
        # Ready means "can take calls" (one healthy worker); tests about rotation want every worker in it.
        wait_until(
            lambda: stack.healthy_workers() == workers, attempts=STARTUP_POLLS, what=f"{workers} healthy workers"
        )
    except AssertionError as never_ready:
        log_tail = stack.log()[-4000:]
        stack.stop()  # a stack that never became ready is not left running behind the failed test
        raise AssertionError(f"{never_ready}; the stack's log ends:\n{log_tail}") from None
    except BaseException:
        stack.stop()
        raise
    return stack
