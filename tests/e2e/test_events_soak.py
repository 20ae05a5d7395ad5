"""A soak of the event guarantees (docs/events.md), run by `make stress`: purchases, refunds and transfers from
several threads while every worker is killed (SIGKILL) again and again. Afterwards every committed change has its
events, the stream has each of them exactly once in commit order, and the webhook receiver has each of them at
least once, first in commit order."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import grpc
import pytest

from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import start_stack, wait_until
from tests.webhook_receiver import Receiver

THREADS = 6
ROUNDS_PER_THREAD = 60
KILLS = 12
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def retried(call, request):  # type: ignore[no-untyped-def]
    """The same request (the same idempotency key) until it is answered: the one answer is its result. A call
    whose worker died holds its key's in-flight guard until the guard's lease lapses: ABORTED until then."""
    for _ in range(1200):
        try:
            return call(request)
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE:
                raise
            threading.Event().wait(0.05)
    raise AssertionError("never answered")


@pytest.mark.stress
def test_events_survive_repeated_worker_kills(tmp_path: Path) -> None:
    env = {
        "PAYGATE_WEBHOOK_INTERVAL_S": "0.1",
        "PAYGATE_WEBHOOK_ROUND_BUDGET_S": "1",
        "PAYGATE_WEBHOOK_CONNECT_TIMEOUT_S": "0.5",
        "PAYGATE_WEBHOOK_READ_TIMEOUT_S": "1.5",
    }
    stack = start_stack(tmp_path / "soak", workers=3, extra_env=env)
    receiver = Receiver()
    try:
        owner = uid("soak")
        key = stack.create_key(owner)
        added = stack.cli("webhooks", "add", "--owner", owner, "--url", receiver.url, "--json")
        assert added.returncode == 0, added.stderr
        stop = threading.Event()
        failures: list[BaseException] = []

        def work(n: int) -> None:
            try:
                with stack.client(*key) as client:
                    user = f"soak-user-{n}"
                    retried(
                        client.top_up,
                        pb.TopUpRequest(
                            order_id=uid("t"),
                            user_id=user,
                            amount_minor=10**7,
                            currency="CNY",
                            method=pb.PAYMENT_METHOD_SANDBOX,
                        ),
                    )
                    for _ in range(ROUNDS_PER_THREAD):
                        paid = retried(
                            client.create_payment,
                            pb.CreatePaymentRequest(
                                order_id=uid("o"),
                                user_id=user,
                                amount_minor=500,
                                currency="CNY",
                                method=pb.PAYMENT_METHOD_WALLET,
                                payee_id="creator-soak",
                            ),
                        )
                        retried(
                            client.refund_payment,
                            pb.RefundPaymentRequest(payment_id=paid.payment_id, refund_id=uid("r"), amount_minor=100),
                        )
                        retried(
                            client.transfer,
                            pb.TransferRequest(
                                transfer_id=uid("x"),
                                from_user_id=user,
                                to_user_id="soak-friend",
                                amount_minor=1,
                                currency="CNY",
                            ),
                        )
            except BaseException as error:  # reported below
                failures.append(error)

        killed: list[int] = []

        def kill() -> None:
            for n in range(KILLS):
                if stop.wait(1.5):
                    return
                pid = stack.worker_pid(f"worker-{n % 3 + 1}")
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
        killer = threading.Thread(target=kill)
        for thread in [*threads, killer]:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        killer.join()
        assert failures == []
        assert len(killed) >= 3, "the soak ended before the workers were killed"
        # Per thread: a top-up (2 events), and per round a purchase (2), a refund (2) and a transfer (1).
        expected_count = THREADS * (2 + ROUNDS_PER_THREAD * 5)
        streamed: list[str] = []
        with stack.client(*key) as client:
            for event in client.stream_events():
                streamed.append(event.event_id)
                if len(streamed) == expected_count:
                    break
        assert len(set(streamed)) == expected_count  # each exactly once on the stream
        wait_until(lambda: set(streamed) <= set(receiver.event_ids()), attempts=2400, what="every webhook")
        first = list(dict.fromkeys(receiver.event_ids()))
        assert first == streamed  # at least once, first in commit order
        check = stack.cli("ledger", "verify")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        receiver.close()
        stack.stop()
