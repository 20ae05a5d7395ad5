"""After a worker is SIGKILLed mid-call, a retry with the same id gets a definitive answer within one lock lease
(docs/ledger.md, "When a worker dies"), every ABORTED on the way says how long to wait, and the purchase is in
the ledger exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.settings import Settings
from tests.security.conftest import decode_outcome
from tests.support import Stack, start_stack, wait_until
from workers.domain.types import AccountKind
from workers.execution.idempotency import RETRY_MAX_MS, RETRY_MIN_MS
from workers.execution.locks import FencedLocks
from workers.operations.context import lock_resource

LOCK_LEASE_MS = Settings().lock_lease_ms
PRICE = 300


@pytest.fixture
def one_worker_stack(tmp_path: Path) -> Iterator[Stack]:
    # A long lock wait: the call must still be waiting for our lock when the worker is killed.
    stack = start_stack(
        tmp_path / "crash",
        workers=1,
        extra_env={"PAYGATE_LOCK_WAIT_MS": "60000", "PAYGATE_LOCK_LEASE_MS": str(LOCK_LEASE_MS)},
    )
    yield stack
    stack.stop()


def test_a_retry_after_the_holder_was_killed_gets_a_definitive_answer(one_worker_stack: Stack) -> None:
    stack = one_worker_stack
    key_id, secret = stack.create_key("crash")
    user = f"u-{uuid.uuid4().hex[:8]}"
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    purchase = pb.CreatePaymentRequest(
        order_id=order_id, user_id=user, amount_minor=PRICE, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
    )
    client = redis.Redis.from_url((stack.data_dir / "run" / "redis.url").read_text().strip())
    guard = f"paygate:inflight:{{crash:order:{order_id}}}"
    locks = FencedLocks(client, "paygate:")
    # No client retries: the test makes its own, to look at each ABORTED and its RetryInfo.
    with stack.client(key_id, secret, timeout_s=60, retry=NO_RETRY) as paygate:
        paygate.top_up(
            pb.TopUpRequest(
                order_id=f"t-{user}", user_id=user, amount_minor=1_000, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
            )
        )
        # Make the call deterministically in flight: it claims its guard, then waits for the wallet lock we hold.
        ours = locks.acquire(lock_resource(AccountKind.WALLET, user, "CNY"), lease_ms=120_000, wait_ms=1_000)
        interrupted: list[grpc.RpcError] = []

        def first_call() -> None:
            try:
                paygate.create_payment(purchase)
            except grpc.RpcError as error:
                interrupted.append(error)

        caller = threading.Thread(target=first_call)
        caller.start()
        wait_until(lambda: client.exists(guard), attempts=400, what="the call holding its in-flight guard")
        worker_pid = stack.worker_pid("worker-1")
        assert worker_pid is not None
        os.kill(worker_pid, signal.SIGKILL)
        locks.release(ours)
        caller.join(timeout=60)
        assert [e.code() for e in interrupted] == [grpc.StatusCode.UNAVAILABLE]

        remaining_ms = client.pttl(guard)
        # The dead holder's guard is gone (-2) or has at most one lease left; never -1 (no TTL: held forever).
        assert remaining_ms == -2 or 0 < remaining_ms <= LOCK_LEASE_MS, remaining_ms

        aborted_delays: list[int] = []
        aborted_reasons: set[str] = set()
        answer = None
        for _ in range(200):  # bounded; each ABORTED is retried after the delay it asks for
            try:
                answer = paygate.create_payment(purchase)
                break
            except grpc.RpcError as error:
                outcome = decode_outcome("CreatePayment", None, error)
                if outcome.code == grpc.StatusCode.ABORTED:
                    assert outcome.retry_delay_ms is not None, "ABORTED must carry a google.rpc.RetryInfo"
                    assert RETRY_MIN_MS <= outcome.retry_delay_ms <= RETRY_MAX_MS, outcome.retry_delay_ms
                    aborted_delays.append(outcome.retry_delay_ms)
                    aborted_reasons.add(outcome.reason)
                    time.sleep(outcome.retry_delay_ms / 1000)
                elif outcome.code == grpc.StatusCode.UNAVAILABLE:  # the supervisor is restarting the worker
                    time.sleep(0.1)
                else:
                    raise
        print(f"guard PTTL after the kill: {remaining_ms} ms; ABORTED retry delays: {aborted_delays}")
        assert answer is not None and answer.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert aborted_reasons <= {"REQUEST_IN_FLIGHT"}, aborted_reasons
        # Each delay is the guard's remaining life (clamped), so honouring them never keeps the caller waiting
        # past the guard's end by more than the minimum delay (plus 1 ms of PTTL rounding per answer).
        assert sum(aborted_delays) <= max(remaining_ms, 0) + RETRY_MIN_MS + len(aborted_delays), aborted_delays
        again = paygate.create_payment(purchase)
        assert again.payment_id == answer.payment_id  # a replay, not a second charge
        balance = paygate.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY"))
        assert balance.available_minor == 1_000 - PRICE
    client.close()
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0 and "ledger verify: OK" in verified.stdout, verified.stdout
