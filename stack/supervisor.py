"""`paygate serve`: the whole stack on one machine (docs/architecture.md, "Processes").

The supervisor starts a private redis-server (unless PAYGATE_REDIS_URL is set), migrates the database, then
starts N worker processes and one gateway process, serves the aggregated /metrics, restarts any child that dies,
and on SIGINT/SIGTERM stops the gateway first (it drains in-flight calls), then the workers, then Redis.

Children are separate programs (`paygate worker`, `paygate gateway`), started with fork+exec before any gRPC
object exists in them, each in its own session so a terminal's Ctrl-C reaches only the supervisor, which then
stops them in order. The run directory holds `state.json` (pids, addresses) for operators and tests.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess as prometheus_multiprocess

from gateway.keystore import load_master_key
from runtime import db
from runtime.errors import ConfigurationError
from runtime.metrics import MULTIPROC_ENV, serve_metrics
from runtime.process import die_with_parent, prepare_die_with_parent
from runtime.redis_support import EmbeddedRedis
from runtime.settings import Settings
from stack.dev_certs import children_tls_env
from stack.risk_command import check_risk_rules
from stack.stack_metrics import metrics_registry

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
QUICK_EXIT_S = 5.0  # a child that dies sooner than this after starting counts towards a crash loop
MAX_QUICK_EXITS = 5
MAX_RESTART_DELAY_S = 10.0
UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0  # consecutive quick exits with an error code: a crash loop
    quick_deaths: int = 0  # consecutive quick ends of any kind: the restart back-off
    restart_at: float = 0.0
    restarts: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # this child's own variables (its TLS certificate)


def socket_dir(settings: Settings) -> Path:
    """The run directory, or a short private temp dir when its paths would be too long for a Unix socket."""
    run_dir = settings.run_dir.resolve()
    if len(str(run_dir / "worker-999-internal.sock")) <= UNIX_SOCKET_PATH_MAX:
        return run_dir
    return Path(tempfile.mkdtemp(prefix="paygate-"))


class Supervisor:
    def __init__(self, settings: Settings, *, plaintext: bool = False) -> None:
        self.settings = settings.replace(data_dir=settings.data_dir.resolve())
        self.plaintext = plaintext
        self.tls_env: dict[str, dict[str, str]] = {}
        self.stopping = False
        self.children: list[Child] = []
        self.redis: EmbeddedRedis | None = None
        self.sockets = self.settings.run_dir
        prepare_die_with_parent()

    # -- start ------------------------------------------------------------------------------------------

    def prepare(self) -> dict[str, str]:
        settings = self.settings
        # First, so that production without TLS material stops before anything starts (docs/security.md).
        self.tls_env = children_tls_env(settings, plaintext=self.plaintext)
        if self.plaintext:
            log.warning(
                "PLAINTEXT: --plaintext serves callers and workers without TLS; dev only, never on a shared network"
            )
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        (settings.run_dir / "gateway.ready").unlink(missing_ok=True)
        self.sockets = socket_dir(settings)
        # Fresh multiprocess metric files per run; counters restart at zero like any process restart.
        shutil.rmtree(settings.metrics_dir, ignore_errors=True)
        settings.metrics_dir.mkdir(parents=True)

        redis_url = settings.redis_url.reveal()
        if not redis_url:
            self.redis = EmbeddedRedis(self.sockets / "redis.sock", settings.run_dir)
            redis_url = self.redis.start()
        marker = settings.run_dir / "redis.url"  # for `paygate` commands run against this stack
        marker.touch(mode=0o600)
        marker.chmod(0o600)  # before the write: the URL may carry the Redis password (docs/configuration.md)
        marker.write_text(redis_url)

        database_url = settings.effective_database_url()
        database = db.Database(database_url, pool_size=1)
        try:
            db.upgrade(database)
        finally:
            database.dispose()
        load_master_key(settings, create=True)
        risk_rules = check_risk_rules(settings)  # a bad rules file stops `serve` here, not in a worker crash loop

        env = dict(os.environ)
        env.update(
            {
                "PAYGATE_DATA_DIR": str(settings.data_dir),
                "PAYGATE_DATABASE_URL": database_url,
                "PAYGATE_REDIS_URL": redis_url,
                MULTIPROC_ENV: str(settings.metrics_dir),
                "PYTHONUNBUFFERED": "1",
                # Flags given to `serve` reach its children too (workers tell providers where to call back).
                "PAYGATE_NOTIFY_LISTEN": settings.notify_listen or "off",
                "PAYGATE_CHANNEL_SIM_LISTEN": settings.channel_sim_listen or "off",
                "PAYGATE_RISK_RULES": str(risk_rules.resolve()) if risk_rules else "off",
            }
        )
        return env

    def build_children(self) -> None:
        python = [sys.executable, "-m", "stack"]
        settings = self.settings
        if settings.mode == "dev" and settings.channel_sim_listen:
            # The providers' stand-in, first: workers read the channel configuration it writes.
            self.children.append(
                Child(
                    "channel-sim",
                    [
                        *python,
                        "channel-sim",
                        "--listen",
                        settings.channel_sim_listen,
                        "--data-dir",
                        str(settings.data_dir),
                    ],
                    extra={"address": settings.channel_sim_listen},
                )
            )
        addresses, internal_addresses = [], []
        for index in range(1, self.settings.workers + 1):
            worker_id = f"worker-{index}"
            address = f"unix:{self.sockets / f'{worker_id}.sock'}"
            internal = f"unix:{self.sockets / f'{worker_id}-internal.sock'}"
            addresses.append(address)
            internal_addresses.append(internal)
            argv = [*python, "worker", "--worker-id", worker_id, "--listen", address]
            if settings.notify_listen:
                argv += ["--internal-listen", internal]
            self.children.append(Child(worker_id, argv, extra={"address": address}, env=self.tls_env["worker"]))
        self.children.append(
            Child(
                "gateway",
                [
                    *python,
                    "gateway",
                    "--listen",
                    self.settings.listen,
                    "--worker-addresses",
                    ",".join(addresses),
                ],
                extra={"address": self.settings.listen},
                env=self.tls_env["gateway"],
            )
        )
        if settings.notify_listen:
            self.children.append(
                Child(
                    "notify-edge",
                    [
                        *python,
                        "notify-edge",
                        "--listen",
                        settings.notify_listen,
                        "--worker-addresses",
                        ",".join(internal_addresses),  # the workers' internal service, nothing else of them
                    ],
                    extra={"address": settings.notify_listen},
                    env=self.tls_env["notify-edge"],
                )
            )

    def wait_for_channel_sim(self, timeout_s: float = 30.0) -> None:
        """Workers load the channel configuration the simulator writes once it listens; wait for it."""
        marker = self.settings.channel_sim_dir / "listen"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if marker.exists():
                return
            sim = next(c for c in self.children if c.name == "channel-sim")
            if sim.process is not None and sim.process.poll() is not None:
                raise ConfigurationError(f"the channel simulator exited with {sim.process.returncode} at start")
            time.sleep(POLL_INTERVAL_S)
        raise ConfigurationError(f"the channel simulator did not start listening within {timeout_s:g} s")

    def spawn(self, child: Child, env: dict[str, str]) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env={**env, **child.env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets the parent-death signal
        )
        child.started_at = time.monotonic()
        log.info("started", extra={"fields": {"child": child.name, "pid": child.process.pid}})

    # -- run --------------------------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        try:
            env = self.prepare()
            serve_metrics(self.settings.metrics_listen, metrics_registry(self, env))
            self.build_children()
            for child in self.children:
                if child.name == "channel-sim":
                    (self.settings.channel_sim_dir / "listen").unlink(missing_ok=True)
                self.spawn(child, env)
                if child.name == "channel-sim":
                    self.wait_for_channel_sim()
            self.write_state()
            self.announce_when_ready()
            return self.watch(env)
        except ConfigurationError as error:
            log.error("cannot start: %s", error)
            return 2
        finally:
            self.shutdown()

    def watch(self, env: dict[str, str]) -> int:
        while not self.stopping:
            changed = False
            now = time.monotonic()
            for child in self.children:
                process = child.process
                if process is not None and process.poll() is not None:
                    changed = True
                    self._on_exit(child, process, now)
                    if child.quick_exits >= MAX_QUICK_EXITS:
                        log.error(
                            "giving up: child keeps dying at start; see its log above",
                            extra={"fields": {"child": child.name, "exit_code": process.returncode}},
                        )
                        return 1
                if child.process is None and now >= child.restart_at and not self.stopping:
                    self.spawn(child, env)
                    child.restarts += 1
                    changed = True
            if self._embedded_redis_died():
                changed = True
            if changed:
                self.write_state()
            time.sleep(POLL_INTERVAL_S)
        return 0

    def _embedded_redis_died(self) -> bool:
        """Restart the private redis-server if it died. It kept nothing, and nothing needs it to: nonces start
        afresh (keyed calls stay idempotent in the database) and lock fences heal from the ledger (docs/ledger.md).
        """
        if self.redis is None or self.redis.process is None or self.redis.process.poll() is None:
            return False
        log.warning(
            "embedded redis-server exited; restarting", extra={"fields": {"exit_code": self.redis.process.returncode}}
        )
        try:
            self.redis.start()
        except ConfigurationError as error:
            log.error("embedded redis-server could not restart: %s", error)
        return True

    def _on_exit(self, child: Child, process: subprocess.Popen[bytes], now: float) -> None:
        lived_s = now - child.started_at
        quick = lived_s < QUICK_EXIT_S
        # Only a child that *exits by itself* with an error soon after starting is in a crash loop (bad
        # configuration, a port in use); one killed by a signal (OOM killer, an operator, a chaos test) is
        # restarted however often it happens, with the same back-off.
        child.quick_exits = child.quick_exits + 1 if quick and process.returncode > 0 else 0
        child.quick_deaths = child.quick_deaths + 1 if quick else 0
        delay = min(MAX_RESTART_DELAY_S, 0.2 * (2 ** max(0, child.quick_deaths - 1)))
        log.warning(
            "child exited; restarting",
            extra={"fields": {"child": child.name, "exit_code": process.returncode, "restart_in_s": delay}},
        )
        self._forget(process)
        child.process = None
        child.restart_at = now + delay

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        """Drop an ended child's live gauges (multiprocess `live*` modes), so none outlives it on /metrics."""
        prometheus_multiprocess.mark_process_dead(process.pid, str(self.settings.metrics_dir))

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("stopping on %s", signal.Signals(signum).name)
        self.stopping = True

    def announce_when_ready(self, timeout_s: float = 30.0) -> None:
        """Log one line once the gateway has a healthy worker (it writes `gateway.ready`)."""
        marker = self.settings.run_dir / "gateway.ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if marker.exists():
                log.info(
                    "paygate is serving",
                    extra={
                        "fields": {
                            "listen": self.settings.listen,
                            "metrics": f"http://{self.settings.metrics_listen}/metrics",
                            "workers": self.settings.workers,
                            "data_dir": str(self.settings.data_dir),
                            "tls": self.tls_env.get("gateway", {}).get("PAYGATE_TLS_CERT", self.settings.tls_cert)
                            or "off (plaintext)",
                        }
                    },
                )
                return
            time.sleep(POLL_INTERVAL_S)
        log.warning("the gateway has no healthy worker yet; still watching")

    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "listen": self.settings.listen,
            "metrics_listen": self.settings.metrics_listen,
            "redis_pid": self.redis.process.pid if self.redis and self.redis.process else None,
            "children": {
                c.name: {
                    "pid": c.process.pid if c.process else None,
                    "restarts": c.restarts,
                    **c.extra,
                }
                for c in self.children
            },
        }
        path = self.settings.run_dir / "state.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(path)

    # -- stop -------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.stopping = True
        (self.settings.run_dir / "gateway.ready").unlink(missing_ok=True)
        edges = [c for c in self.children if c.name in ("gateway", "notify-edge")]
        simulator = [c for c in self.children if c.name == "channel-sim"]
        workers = [c for c in self.children if c not in edges and c not in simulator]
        # Edges first: they stop accepting and drain in-flight calls, which still need the workers; the
        # simulator last, since draining workers may still be calling it.
        for group in (edges, workers, simulator):
            self._stop_group(group)
        if self.redis is not None:
            self.redis.stop()
        (self.settings.run_dir / "state.json").unlink(missing_ok=True)
        log.info("stopped")

    def _stop_group(self, group: list[Child]) -> None:
        running = [c.process for c in group if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 5
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child did not stop in time; killing", extra={"fields": {"pid": process.pid}})
                process.kill()
                process.wait()
            self._forget(process)
