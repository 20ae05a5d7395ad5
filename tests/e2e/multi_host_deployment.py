"""A Paygate deployment spread over test hosts (tests/hosts.py): Redis and the database on the infra host, the
gateway on a host of its own, one worker per worker host — separate `paygate gateway` / `paygate worker` processes
configured as an operator would (deploy/README.md), not `paygate serve`.

- Redis: a private `redis-server` bound to the infra host's address (every host reaches it over its link).
- The database: a SQLite file of the shared filesystem (namespaces share the filesystem; a real second host would
  not — cutting a worker host's link does not cut it from this database, which is the case where a call can
  commit on a host whose answer never comes back); or a throwaway PostgreSQL database, reached from the worker
  hosts through a forwarder on the infra host (`forward_database`).
- TLS: `paygate certs dev` material; the gateway's public certificate names the address the callers dial (its
  host's), workers are verified under the fixed name `paygate-worker` whatever their address (runtime/tls.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from paygate.client import PaygateClient
from runtime.db import Database, upgrade
from stack.dev_certs import ensure_dev_certs
from tests.hosts import Host, Network
from tests.support import REPO_ROOT, free_port, wait_until

WORKER_PORT = 50061
GATEWAY_PORT = 50051
METRICS_PORT = 9464


@dataclass
class Deployment:
    network: Network
    directory: Path
    env: dict[str, str]  # what every process of the deployment shares (database, Redis, master key)
    gateway_listen: str
    metrics_listen: str
    worker_addresses: dict[str, str]  # worker host name -> the address the gateway dials

    @property
    def database_url(self) -> str:
        return self.env["PAYGATE_DATABASE_URL"]

    @property
    def ca_file(self) -> str:
        return str(self.directory / "tls" / "ca.pem")

    def client(self, key_id: str, secret: str, **kwargs: object) -> PaygateClient:
        return PaygateClient(self.gateway_listen, key_id, secret, root_certificates=self.ca_file, **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `paygate` command run by an operator on the infra host."""
        return subprocess.run(
            [sys.executable, "-m", "stack", *args],
            env={**self.env, "PAYGATE_DATA_DIR": str(self.directory / "infra")},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=REPO_ROOT,
        )

    def create_key(self, name: str) -> tuple[str, str]:
        result = self.cli("keys", "create", "--name", name, "--scopes", "*", "--json")
        assert result.returncode == 0, result.stderr
        created = json.loads(result.stdout)
        return created["key_id"], created["secret"]

    def worker_health(self) -> dict[str, float]:
        """`paygate_worker_healthy` per worker host, read from the gateway's /metrics as an operator would."""
        with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics", timeout=5) as response:
            text = response.read().decode()
        by_address = {address: name for name, address in self.worker_addresses.items()}
        health: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("paygate_worker_healthy{"):
                address = line.split('worker_address="', 1)[1].split('"', 1)[0]
                health[by_address.get(address, address)] = float(line.rsplit(" ", 1)[1])
        return health

    def forwarded(self, outcome: str) -> dict[str, float]:
        """`paygate_gateway_forwarded_total{outcome}` per worker host."""
        with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics", timeout=5) as response:
            text = response.read().decode()
        by_address = {address: name for name, address in self.worker_addresses.items()}
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("paygate_gateway_forwarded_total{") and f'outcome="{outcome}"' in line:
                address = line.split('worker_address="', 1)[1].split('"', 1)[0]
                counts[by_address.get(address, address)] = float(line.rsplit(" ", 1)[1])
        return counts

    def holds_no_database_lock(self, host: Host) -> bool:
        """Loopback mode's SIGSTOP must not catch a worker inside the shared SQLite file's writer gate (an exclusive
        flock, runtime/db.py): every host would wait for it — an artefact of the shared file, which a real host
        cut off from the network would not hold."""
        if not self.database_url.startswith("sqlite:///"):
            return True
        lock_file = Path(self.database_url.removeprefix("sqlite:///") + "-writer.lock")
        try:
            inode = lock_file.stat().st_ino
        except FileNotFoundError:
            return True
        pids = {str(p.pid) for p in host.processes}
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter's line has "->" after the number
            if "->" not in line and len(fields) >= 6 and fields[4] in pids and fields[5].endswith(f":{inode}"):
                return False
        return True

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.directory.glob("*.log"))


def start_redis(network: Network, directory: Path) -> str:
    """A private redis-server on the infra host's address; its URL."""
    infra = network.hosts["infra"]
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is required (Debian: redis-server)"
    port = free_port()
    argv = [server, "--bind", infra.address, "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--protected-mode", "no", "--dir", str(directory)]
    network.spawn(infra, argv, {}, directory / "redis.log")
    url = f"redis://{infra.address}:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(answers, attempts=200, what="the private redis-server answering")
    client.close()
    return url


def tls_env(tls: Path, role: str) -> dict[str, str]:
    internal = {"gateway": "gateway-client", "worker": "worker"}[role]
    env = {
        "PAYGATE_INTERNAL_TLS_CA": str(tls / "internal-ca.pem"),
        "PAYGATE_INTERNAL_TLS_CERT": str(tls / f"{internal}.pem"),
        "PAYGATE_INTERNAL_TLS_KEY": str(tls / f"{internal}.key"),
    }
    if role == "gateway":
        env |= {"PAYGATE_TLS_CERT": str(tls / "gateway.pem"), "PAYGATE_TLS_KEY": str(tls / "gateway.key")}
    return env


def forward_database(network: Network, directory: Path, database_url: str) -> str:
    """A PostgreSQL URL every host can use: the server listens on 127.0.0.1 of the root namespace only, so with
    namespaces a `socat` on the infra host's address forwards to it (the link of a cut host then cuts its database
    connections too, as on real hosts)."""
    if not network.namespaces:
        return database_url
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is needed to forward PostgreSQL to the worker hosts (Debian: socat)")
    url = make_url(database_url)
    infra = network.hosts["infra"]
    port = free_port()
    listen = f"TCP-LISTEN:{port},bind={infra.address},fork,reuseaddr"
    network.spawn(infra, [socat, listen, f"TCP:{url.host}:{url.port or 5432}"], {}, directory / "socat.log")
    forwarded = url.set(host=infra.address, port=port).render_as_string(hide_password=False)
    engine = create_engine(forwarded)
    wait_until(lambda: _answers(engine), attempts=200, what="PostgreSQL through the forwarder")
    engine.dispose()
    return forwarded


def _answers(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar_one() == 1
    except OperationalError:
        return False


def deploy(
    network: Network, directory: Path, worker_hosts: list[str], base_env: dict[str, str], database_url: str
) -> Deployment:
    """Redis, the migrated database, certificates, the workers and the gateway; returns once the gateway has every
    worker in its rotation."""
    gateway_host = network.hosts["gateway"]
    if not database_url.startswith("sqlite"):
        database_url = forward_database(network, directory, database_url)
    database = Database(database_url, pool_size=1)
    upgrade(database)
    database.dispose()
    env = {
        **base_env,
        "PAYGATE_DATABASE_URL": database_url,
        "PAYGATE_REDIS_URL": start_redis(network, directory),
        "PAYGATE_MASTER_KEY": Fernet.generate_key().decode(),  # one key for every host, as in deploy/README.md
        "PAYGATE_LOG_LEVEL": "INFO",
        "PAYGATE_NOTIFY_LISTEN": "off",
        "PAYGATE_CHANNEL_SIM_LISTEN": "off",
        "PYTHONUNBUFFERED": "1",
        "PAYGATE_SHUTDOWN_GRACE_S": "2",  # teardown: calls to a host that was cut off need not be waited for
    }
    ensure_dev_certs(directory, hosts=[gateway_host.address])
    tls = directory / "tls"
    loopback = not network.namespaces  # hosts share one port space there
    addresses: dict[str, str] = {}
    for name in worker_hosts:
        host = network.hosts[name]
        address = addresses[name] = f"{host.address}:{free_port() if loopback else WORKER_PORT}"
        argv = [sys.executable, "-m", "stack", "worker", "--worker-id", name, "--listen", address]
        _spawn(network, host, argv, {**env, **tls_env(tls, "worker")}, directory)
    listen = f"{gateway_host.address}:{free_port() if loopback else GATEWAY_PORT}"
    metrics = f"{gateway_host.address}:{free_port() if loopback else METRICS_PORT}"
    argv = [sys.executable, "-m", "stack", "gateway", "--listen", listen, "--metrics-listen", metrics]
    argv += ["--worker-addresses", ",".join(addresses.values())]
    _spawn(network, gateway_host, argv, {**env, **tls_env(tls, "gateway")}, directory)
    deployment = Deployment(network, directory, env, listen, metrics, addresses)

    def all_healthy() -> bool:
        for process in (p for h in network.hosts.values() for p in h.processes):
            assert process.poll() is None, f"a process exited with {process.returncode}:\n{deployment.logs()}"
        try:
            health = deployment.worker_health()
        except OSError:
            return False
        return health == dict.fromkeys(worker_hosts, 1.0)

    wait_until(all_healthy, attempts=600, what="every worker host in the gateway's rotation")
    return deployment


def _spawn(network: Network, host: Host, argv: list[str], env: dict[str, str], directory: Path) -> None:
    data_dir = directory / host.name
    data_dir.mkdir(exist_ok=True)
    network.spawn(host, argv, {**env, "PAYGATE_DATA_DIR": str(data_dir)}, directory / f"{host.name}.log", REPO_ROOT)
