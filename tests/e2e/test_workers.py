"""Round-robin across real worker processes, and a killed worker leaving and rejoining the rotation."""

from __future__ import annotations

import collections
import os
import signal

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, wait_until

WORKERS = {"worker-1", "worker-2", "worker-3"}


def served_by(client: PaygateClient, calls: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(calls):
        result = client.call("GetBalance", pb.GetBalanceRequest(user_id="u-rr", currency="CNY"), pb.Balance)
        assert result.worker is not None
        counts[result.worker] += 1
    return counts


def test_round_robin_spreads_calls_over_every_worker(client: PaygateClient) -> None:
    counts = served_by(client, 30)
    assert set(counts) == WORKERS
    # Strict rotation over healthy workers: sequential calls are spread evenly.
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_a_killed_worker_leaves_the_rotation_and_serves_again_after_restart(
    stack: Stack, client: PaygateClient
) -> None:
    old_pid = stack.worker_pid("worker-2")
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    # Every call still succeeds: a call that could not be delivered goes to the next worker.
    wait_until(lambda: "worker-2" not in served_by(client, 6), attempts=200, what="worker-2 leaving the rotation")
    assert "worker-2" not in served_by(client, 9)

    # The supervisor restarts it (new pid) and the gateway's health check brings it back.
    wait_until(lambda: stack.worker_pid("worker-2") not in (None, old_pid), attempts=400, what="worker-2 restart")
    wait_until(lambda: "worker-2" in served_by(client, 6), attempts=400, what="worker-2 rejoining")
    assert set(served_by(client, 12)) == WORKERS
    assert stack.state()["children"]["worker-2"]["restarts"] >= 1
