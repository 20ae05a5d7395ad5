"""A worker SIGKILLed exactly between the provider call and our commit (the failpoint `after_provider_call`):
the provider holds an order, nothing of its answer is committed. The attempt row written before the call makes it
recoverable: the caller's retry resumes it, the provider deduplicates by our attempt id, and the payer is charged
once — never a charge nobody recorded."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from paygate.client import PaygateClient
from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from tests.e2e.channel_support import Simulator, wait_for_status
from tests.support import Stack, start_stack, wait_until


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(
        Path(tmp_path_factory.mktemp("channel-crash")),
        workers=2,
        channels=True,
        extra_env={
            "PAYGATE_FAILPOINT": "after_provider_call",
            "PAYGATE_SIM_PAY_AFTER_MS": "0",  # the payer pays when the test says so
        },
    )
    yield started
    started.stop()


def test_a_crash_between_the_provider_call_and_the_commit_leaves_a_recoverable_attempt(stack: Stack) -> None:
    sim = Simulator.of(stack)
    key_id, secret = stack.create_key("crash")
    request = pb.CreatePaymentRequest(
        order_id=f"crash-{uuid.uuid4().hex[:8]}",
        user_id="learner-crash",
        amount_minor=66_00,
        currency="CNY",
        method=pb.PAYMENT_METHOD_ALIPAY,
        payee_id="creator-crash",
        description="Course bought while a worker died",
    )
    with stack.client(key_id, secret) as client:
        with pytest.raises(grpc.RpcError) as crashed:
            client.create_payment(request, retry=NO_RETRY)  # this one attempt is what the test looks at
        assert crashed.value.code() == grpc.StatusCode.UNAVAILABLE  # the worker died holding the call
        assert "worker-" in stack.log() and (stack.data_dir / "run" / "failpoint-after_provider_call").exists()

        with sqlite3.connect(stack.data_dir / "paygate.sqlite3") as connection:
            rows = connection.execute(
                "SELECT a.attempt_id, a.status, p.status FROM payment_attempts a JOIN payments p"
                " ON p.payment_id = a.payment_id WHERE p.order_id = ?",
                (request.order_id,),
            ).fetchall()
        assert len(rows) == 1 and rows[0][1:] == ("created", "pending")  # written before the call, still there
        attempt_id = rows[0][0]
        assert sim.order("alipay", attempt_id)["status"]  # and the provider holds the order

        # The caller retries with the same order id: the same attempt is resumed, not a second one opened.
        resumed = wait_until(lambda: _retry(client, request), attempts=200, what="the retry answered")
        assert resumed.attempt_id == attempt_id and resumed.status == pb.PAYMENT_STATUS_PENDING
        sim.control("POST", f"/orders/alipay/{attempt_id}/pay")
        paid = wait_for_status(client, resumed.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)

    orders = sim.control("GET", "/orders?channel=alipay")
    listed = orders["orders"] if isinstance(orders, dict) else orders
    assert [o["out_trade_no"] for o in listed].count(attempt_id) == 1  # one order at the provider, paid once
    assert sim.order("alipay", attempt_id)["paid_amount"] == paid.amount_minor
    with sqlite3.connect(stack.data_dir / "paygate.sqlite3") as connection:
        attempts = connection.execute(
            "SELECT count(*) FROM payment_attempts WHERE payment_id = ?", (paid.payment_id,)
        ).fetchone()
    assert attempts == (1,)
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout


def _retry(client: PaygateClient, request: pb.CreatePaymentRequest) -> pb.Payment | None:
    try:
        return client.create_payment(request)
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
            return None  # the worker is restarting, or the dead holder's in-flight guard has not expired yet
        raise
