"""Test hosts for multi-host e2e tests (docs/architecture.md, "Workers on other hosts").

Two kinds of network, chosen once per test by `make_network`:

- **namespaces** (root, `ip` present): one Linux network namespace per host, each with one NIC (`eth0`, a veth
  pair) plugged into a bridge of the test's own in the root namespace; addresses from a /24 of 10.213.0.0/16
  that no route of the machine uses. The root namespace is the "infra" host (the test's callers, Redis, the
  database). Cutting a host off sets its NIC down: packets are dropped silently, like an unplugged cable, so TCP
  connections hang rather than reset. `drop_replies_to` blackholes a host's packets to one address only (its
  answers are lost while requests still arrive).
- **loopback** (fallback, reason logged): every host is a distinct 127.0.0.x address of the one namespace.
  Cutting a host off is SIGSTOP of its processes (SIGCONT to return): its sockets stay open and nothing answers,
  which is what a hung or unplugged host looks like to a peer.

Every process a host runs is started through `Network.spawn` and is stopped by `Network.close`, which also removes
the namespaces and the bridge; `remove_stale` removes those of a test run that was killed outright.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.process import die_with_parent, prepare_die_with_parent

log = logging.getLogger(__name__)

PREFIX = "pgmh"  # names of this module's namespaces and links: pgmh<pid>-<host>, pgmh<pid>b, pgmh<pid>v<n>
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
MAX_HOSTS = 8
MAX_STOP_ATTEMPTS = 200
STOP_RETRY_PAUSE_S = 0.01
STOP_WAIT_S = 10.0


@dataclass
class Host:
    name: str
    address: str
    namespace: str | None = None  # None: the root namespace
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as run on this host (inside its namespace)."""
        return ["ip", "netns", "exec", self.namespace, *argv] if self.namespace else list(argv)


def run_ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if os.environ.get("PAYGATE_TEST_HOSTS") == "loopback":
        return "PAYGATE_TEST_HOSTS=loopback asks for the loopback fallback"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "not root: `ip netns add` needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        run_ip("netns", "add", probe)
    except subprocess.CalledProcessError as error:
        return f"`ip netns add` failed: {error.stderr.decode(errors='replace').strip()}"
    run_ip("netns", "delete", probe)
    return None


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of SUPERNET that no route or address of the machine overlaps, picked from the pid for spread."""
    shown = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True)
    used = shown.stdout
    subnets = list(SUPERNET.subnets(new_prefix=24))
    start = os.getpid() % len(subnets)
    for offset in range(len(subnets)):
        subnet = subnets[(start + offset) % len(subnets)]
        if f"{'.'.join(str(subnet.network_address).split('.')[:3])}." not in used:
            return subnet
    raise RuntimeError(f"no free /24 in {SUPERNET}")


def remove_stale() -> None:
    """Namespaces and bridges left by a test process that no longer exists (killed before its finalizer ran)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX) or "-" not in name:
            continue
        owner = name[len(PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
            subprocess.run(["ip", "link", "delete", f"{PREFIX}{owner}b"], capture_output=True, check=False)


class Network:
    """The hosts of one test and how to cut them off; `close` undoes everything, whatever state it is in."""

    def __init__(self, mode: str, reason: str) -> None:
        self.mode = mode  # "namespaces" or "loopback"
        self.reason = reason
        self.hosts: dict[str, Host] = {}
        self._bridge: str | None = None
        self._blackholes: list[tuple[Host, str]] = []
        self._stopped: set[str] = set()

    @property
    def namespaces(self) -> bool:
        return self.mode == "namespaces"

    def spawn(
        self, host: Host, argv: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                host.command(argv),
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets the parent-death signal
            )
        host.processes.append(process)
        return process

    # -- cutting a host off and back ------------------------------------------------------------------------

    def cut(self, host: Host, may_stay_stopped: Callable[[Host], bool] = lambda host: True) -> None:
        """Namespaces: the host's NIC goes down. Loopback: its processes are stopped — but one that holds what
        every host needs (`may_stay_stopped` says no; e.g. a lock on a file they share, which a host really cut
        off could not hold) is resumed and stopped again a moment later, a bounded number of times."""
        if self.namespaces:
            run_ip("-n", str(host.namespace), "link", "set", "eth0", "down")
            log.warning("host %s cut off: its link is down", host.name)
            return
        for _attempt in range(MAX_STOP_ATTEMPTS):
            self._signal(host, signal.SIGSTOP)
            if may_stay_stopped(host):
                self._stopped.add(host.name)
                log.warning("host %s cut off: its processes are stopped (SIGSTOP)", host.name)
                return
            self._signal(host, signal.SIGCONT)
            time.sleep(STOP_RETRY_PAUSE_S)
        raise AssertionError(f"host {host.name} could not be stopped at a moment it holds nothing shared")

    def restore(self, host: Host) -> None:
        if self.namespaces:
            for blackholed_host, destination in list(self._blackholes):
                if blackholed_host is host:
                    run_ip("-n", str(host.namespace), "route", "delete", "blackhole", f"{destination}/32")
                    self._blackholes.remove((blackholed_host, destination))
            run_ip("-n", str(host.namespace), "link", "set", "eth0", "up")
        else:
            self._signal(host, signal.SIGCONT)
            self._stopped.discard(host.name)
        log.warning("host %s back", host.name)

    def drop_replies_to(self, host: Host, destination: str) -> None:
        """Namespaces only: `host` silently drops what it sends to `destination`; what arrives still arrives."""
        assert self.namespaces, "loopback hosts share one routing table"
        run_ip("-n", str(host.namespace), "route", "add", "blackhole", f"{destination}/32")
        self._blackholes.append((host, destination))

    @staticmethod
    def _signal(host: Host, signum: signal.Signals) -> None:
        for process in host.processes:
            if process.poll() is None:
                os.kill(process.pid, signum)

    # -- teardown -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        # The deployment first (in parallel: each may take its drain time), then what it depends on (Redis).
        others = [p for h in self.hosts.values() if h.name != "infra" for p in h.processes]
        infra = self.hosts["infra"].processes if "infra" in self.hosts else []
        for group in (others, infra):
            for process in group:
                _signal_stop(process)
            for process in group:
                _wait_stopped(process)
        for host in self.hosts.values():
            if host.namespace:
                subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True, check=False)
        if self._bridge:
            subprocess.run(["ip", "link", "delete", self._bridge], capture_output=True, check=False)


def _signal_stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.terminate()


def _wait_stopped(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_WAIT_S)


def make_network(names: Sequence[str]) -> Network:
    """An "infra" host (this process's own namespace) plus one host per name, on namespaces when possible."""
    assert 0 < len(names) < MAX_HOSTS
    prepare_die_with_parent()  # the hosts' processes get SIGTERM if the test process dies without its finalizer
    reason = namespaces_unavailable()
    if reason is not None:
        log.warning("multi-host test on loopback addresses, not namespaces: %s", reason)
        network = Network("loopback", reason)
        network.hosts["infra"] = Host("infra", "127.0.0.1")
        for index, name in enumerate(names, start=2):
            network.hosts[name] = Host(name, f"127.0.0.{index}")
        return network
    remove_stale()
    network = Network("namespaces", "running as root with iproute2")
    try:
        _build_namespaces(network, names)
    except BaseException:
        network.close()
        raise
    return network


def _build_namespaces(network: Network, names: Sequence[str]) -> None:
    subnet = free_subnet()
    addresses = list(subnet.hosts())
    tag = f"{PREFIX}{os.getpid()}"
    bridge = network._bridge = f"{tag}b"
    run_ip("link", "add", bridge, "type", "bridge")
    run_ip("address", "add", f"{addresses[0]}/24", "dev", bridge)
    run_ip("link", "set", bridge, "up")
    network.hosts["infra"] = Host("infra", str(addresses[0]))
    for index, name in enumerate(names, start=1):
        namespace, link = f"{tag}-{name}", f"{tag}v{index}"
        host = network.hosts[name] = Host(name, str(addresses[10 + index]), namespace)
        run_ip("netns", "add", namespace)
        run_ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        run_ip("link", "set", link, "master", bridge)
        run_ip("link", "set", link, "up")
        run_ip("-n", namespace, "address", "add", f"{host.address}/24", "dev", "eth0")
        run_ip("-n", namespace, "link", "set", "eth0", "up")
        run_ip("-n", namespace, "link", "set", "lo", "up")
    log.warning(
        "multi-host test on namespaces, subnet %s: %s", subnet, {h.name: h.address for h in network.hosts.values()}
    )
