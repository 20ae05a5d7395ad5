"""/metrics after processes die (docs/metrics.md, "After a restart"): a real `paygate serve`, children killed with
SIGKILL and restarted by the supervisor, workers frozen with SIGSTOP so the gateway's health checks fail.

The defect this guards against: `paygate_worker_healthy` was aggregated with the multiprocess mode `max` over the
files of every gateway that ever ran, so after a gateway restart the dead one's 1s hid the new one's 0s and a
"no healthy worker" alert could not fire.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack, start_stack, wait_until

WORKERS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(Path(tmp_path_factory.mktemp("metrics-restarts")), workers=WORKERS)
    yield running
    assert running.stop() == 0, running.log()[-4000:]


def samples(text: str, name: str) -> dict[str, float]:
    """`{labels: value}` of one series name in an exposition."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(\{{.*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def health(stack: Stack) -> dict[str, float]:
    return samples(stack.metrics_text(), "paygate_worker_healthy")


def pid_of(stack: Stack, name: str) -> int | None:
    return stack.worker_pid(name)


def live_files_of(stack: Stack, pid: int) -> list[str]:
    return sorted(path.name for path in (stack.data_dir / "metrics").glob(f"gauge_live*_{pid}.db"))


def restarted(stack: Stack, name: str, old_pid: int) -> int:
    def new_pid() -> int | None:
        pid = pid_of(stack, name)
        return pid if pid not in (None, old_pid) else None

    pid = wait_until(new_pid, attempts=600, what=f"{name} restarted")
    assert isinstance(pid, int)
    return pid


def build_of(stack: Stack, process: str) -> list[str]:
    return [k for k in samples(stack.metrics_text(), "paygate_build_info") if f'process="{process}"' in k]


def one_series_for(stack: Stack, process: str) -> None:
    """The process appears once in each per-process family, as the process it is now."""
    text = stack.metrics_text()
    for name in ("paygate_process_start_time_seconds", "paygate_process_resident_memory_bytes"):
        assert [k for k in samples(text, name) if f'process="{process}"' in k] == [f'{{process="{process}"}}']
    assert len(build_of(stack, process)) == 1


def test_after_a_gateway_restart_frozen_workers_read_as_unhealthy(stack: Stack) -> None:
    old = pid_of(stack, "gateway")
    assert old is not None
    assert live_files_of(stack, old), "the gateway writes live gauges (worker health, build info)"
    before = samples(stack.metrics_text(), "paygate_process_start_time_seconds")['{process="gateway"}']
    os.kill(old, signal.SIGKILL)
    restarted(stack, "gateway", old)
    wait_until(lambda: build_of(stack, "gateway"), attempts=600, what="the new gateway's metrics")
    wait_until(lambda: list(health(stack).values()) == [1.0] * WORKERS, attempts=600, what="workers healthy again")
    assert live_files_of(stack, old) == []
    one_series_for(stack, "gateway")
    # The new process's figures, not the dead one's.
    assert samples(stack.metrics_text(), "paygate_process_start_time_seconds")['{process="gateway"}'] > before

    workers = [pid_of(stack, f"worker-{n}") for n in range(1, WORKERS + 1)]
    assert all(isinstance(pid, int) for pid in workers)
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # type: ignore[arg-type]
        # Every series drops to 0 (none disappears), so max(paygate_worker_healthy) == 0 fires the alert.
        wait_until(lambda: list(health(stack).values()) == [0.0] * WORKERS, attempts=600, what="all workers at 0")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]
    wait_until(lambda: list(health(stack).values()) == [1.0] * WORKERS, attempts=600, what="workers back")


def test_a_worker_stopped_for_good_reads_as_unhealthy(stack: Stack) -> None:
    pid = pid_of(stack, "worker-1")
    assert pid is not None
    try:
        os.kill(pid, signal.SIGSTOP)
        wait_until(
            lambda: sorted(health(stack).values()) == [0.0, 1.0] and stack.healthy_workers() == 1,
            attempts=600,
            what="worker-1 at 0, worker-2 at 1",
        )
        at_zero = [labels for labels, value in health(stack).items() if value == 0.0]
        assert at_zero == [f'{{worker_address="unix:{stack.data_dir / "run" / "worker-1.sock"}"}}']
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: stack.healthy_workers() == WORKERS, attempts=600, what="worker-1 back")


def test_after_a_worker_restart_only_the_new_process_is_reported(stack: Stack) -> None:
    old = pid_of(stack, "worker-2")
    assert old is not None
    before = samples(stack.metrics_text(), "paygate_process_start_time_seconds")['{process="worker-2"}']
    os.kill(old, signal.SIGKILL)
    restarted(stack, "worker-2", old)
    wait_until(lambda: stack.healthy_workers() == WORKERS, attempts=600, what="worker-2 back in the rotation")
    wait_until(lambda: live_files_of(stack, old) == [], attempts=100, what="the dead worker's live gauges gone")

    def restarted_series() -> bool:
        text = stack.metrics_text()
        start = samples(text, "paygate_process_start_time_seconds").get('{process="worker-2"}', 0.0)
        pools = [k for k in samples(text, "paygate_db_pool_connections") if 'process="worker-2"' in k]
        return start > before and len(pools) == 2

    wait_until(restarted_series, attempts=600, what="worker-2's series from its new process")
    one_series_for(stack, "worker-2")
