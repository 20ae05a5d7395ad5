"""Real Redis topologies for the high-availability tests: a primary, a replica and three Sentinels (quorum 2) on
free loopback ports, and a TLS-only redis-server. Every process is started here and stopped by `close()`."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support import free_port, wait_until

SERVICE = "paygate-ha"
# Short enough that a test sees a failover within seconds, long enough that a loaded 2-core machine does not
# see a primary as down when it is only slow to answer a PING.
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 6000


def redis_binaries() -> tuple[str, str]:
    """redis-server and redis-sentinel, or skip the test saying which is missing."""
    server, sentinel = shutil.which("redis-server"), shutil.which("redis-sentinel")
    if server is None or sentinel is None:
        pytest.skip("redis-server and redis-sentinel are needed (Debian: apt-get install redis-server redis-sentinel)")
    return server, sentinel


def _server_args(port: int, directory: Path) -> list[str]:
    return ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(directory)]


@dataclass
class Processes:
    directory: Path
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.running.append(process)
        return process

    def close(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def answers(port: int, **kwargs: object) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, **kwargs) as client:  # type: ignore[arg-type]
            return bool(client.ping())
    except redis.RedisError:
        return False


def tls_files(certs: Path) -> dict[str, str]:
    """A client's TLS arguments with the project's dev certificates (stack/dev_certs.py) under `certs`."""
    return {
        "ssl_ca_certs": str(certs / "ca.pem"),
        "ssl_certfile": str(certs / "caller.pem"),
        "ssl_keyfile": str(certs / "caller.key"),
    }


def _tls_server_args(certs: Path) -> list[str]:
    """TLS only, client certificates required; replication and Sentinel links over TLS with the caller cert."""
    return [
        *("--tls-cert-file", str(certs / "gateway.pem"), "--tls-key-file", str(certs / "gateway.key")),
        *("--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-replication", "yes"),
        *("--tls-client-cert-file", str(certs / "caller.pem"), "--tls-client-key-file", str(certs / "caller.key")),
    ]


@dataclass
class SentinelGroup(Processes):
    """A primary, a replica and three Sentinels that watch them as SERVICE; with `certs`, all of it over TLS only
    (`rediss+sentinel://`)."""

    certs: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{self.ports[f'sentinel-{n}']}" for n in range(3))
        if self.certs is None:
            return f"redis+sentinel://{sentinels}/{SERVICE}"
        options = "&".join(f"{name}={value}" for name, value in tls_files(self.certs).items())
        return f"rediss+sentinel://{sentinels}/{SERVICE}?{options}"

    def admin(self, port: int) -> redis.Redis:
        tls = {"ssl": True, **tls_files(self.certs)} if self.certs else {}
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, **tls)  # type: ignore[arg-type]

    def _args(self, port: int) -> list[str]:
        if self.certs is None:
            return _server_args(port, self.directory)
        return [*_server_args(0, self.directory), "--tls-port", str(port), *_tls_server_args(self.certs)]

    def primary_port(self) -> int:
        """The port the Sentinels currently name as primary (what each client would be told)."""
        with self.admin(self.ports["sentinel-0"]) as sentinel:
            _host, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill_primary(self) -> str:
        """SIGKILL the server the Sentinels name as primary; returns its name ("primary" or "replica")."""
        port = self.primary_port()
        name = next(n for n, p in self.ports.items() if p == port)
        self.servers[name].kill()
        self.servers[name].wait(10)
        return name

    def failover(self) -> int:
        """SENTINEL FAILOVER: the replica is promoted and the old primary, still running, is demoted to its
        replica. Returns the new primary's port once every Sentinel names it and both servers have their new
        roles."""
        old = self.primary_port()
        with self.admin(self.ports["sentinel-0"]) as sentinel:
            sentinel.sentinel_failover(SERVICE)

        def switched() -> int | None:
            named = {self._named_by(n) for n in range(3)}
            if len(named) != 1 or old in named:
                return None
            port = named.pop()
            # Until the old primary has taken the replica role too, both accept writes, and what the old one took
            # is lost when it becomes a replica (docs/architecture.md, "Redis high availability").
            return port if self._role(port) == "master" and self._role(old) == "slave" else None

        return int(wait_until(switched, attempts=600, interval_s=0.1, what="the failover"))

    def _role(self, port: int) -> str:
        with self.admin(port) as server:
            return str(server.info("replication").get("role"))

    def _named_by(self, n: int) -> int:
        with self.admin(self.ports[f"sentinel-{n}"]) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(SERVICE)[1])

    def start_all(self) -> None:
        server, sentinel_binary = redis_binaries()
        for name in ("primary", "replica", "sentinel-0", "sentinel-1", "sentinel-2"):
            self.ports[name] = free_port()
        self.servers["primary"] = self.start("primary", [server, *self._args(self.ports["primary"])])
        replica_args = [*self._args(self.ports["replica"]), "--replicaof", "127.0.0.1"]
        self.servers["replica"] = self.start("replica", [server, *replica_args, str(self.ports["primary"])])
        wait_until(self._replica_in_sync, attempts=400, what="replica in sync")
        for n in range(3):
            self.start(f"sentinel-{n}", [sentinel_binary, str(self._sentinel_config(n))])
        wait_until(self._sentinels_ready, attempts=600, what="three Sentinels that know the replica")

    def _sentinel_config(self, n: int) -> Path:
        config = self.directory / f"sentinel-{n}.conf"  # Sentinel rewrites its own file, so one each
        config.write_text(
            f"port {self.ports[f'sentinel-{n}']}\nbind 127.0.0.1\nprotected-mode no\ndir {self.directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports['primary']} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        if self.certs is not None:  # the same TLS set as the servers', in the file's syntax
            flags = iter(_tls_server_args(self.certs))
            tls = "".join(f"{flag.removeprefix('--')} {value}\n" for flag, value in zip(flags, flags, strict=True))
            port = self.ports[f"sentinel-{n}"]
            config.write_text(config.read_text().replace(f"port {port}\n", f"port 0\ntls-port {port}\n{tls}", 1))
        return config

    def _replica_in_sync(self) -> bool:
        try:
            with self.admin(self.ports["replica"]) as replica:
                return replica.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def _sentinels_ready(self) -> bool:
        for n in range(3):
            try:
                with self.admin(self.ports[f"sentinel-{n}"]) as s:
                    state = s.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True


def tls_redis(processes: Processes, certs: Path, password: str) -> int:
    """A redis-server that speaks only TLS (no plaintext port), requires a client certificate its CA signed and
    the password; `certs` holds the project's dev certificates (stack/dev_certs.py). Returns its port."""
    server, _ = redis_binaries()
    port = free_port()
    processes.start(
        "redis-tls",
        [
            server,
            *_server_args(0, processes.directory),
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs / "gateway.pem"),
            "--tls-key-file",
            str(certs / "gateway.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.pem"),
            "--requirepass",
            password,
        ],
    )
    client_tls = {
        "ssl": True,
        "ssl_ca_certs": str(certs / "ca.pem"),
        "ssl_certfile": str(certs / "caller.pem"),
        "ssl_keyfile": str(certs / "caller.key"),
        "password": password,
    }
    wait_until(lambda: answers(port, **client_tls), attempts=400, what="TLS redis-server answering")
    return port
