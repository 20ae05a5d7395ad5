"""Order expiry inside a running stack: the sweeper closes PENDING payments, a late confirmation is refunded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import start_stack, wait_until


def test_the_sweeper_closes_pending_payments_and_late_confirmations_are_refunded(tmp_path: Path) -> None:
    stack = start_stack(
        tmp_path / "deferred",
        workers=2,
        extra_env={
            "PAYGATE_SANDBOX_CONFIRMATION": "deferred",
            "PAYGATE_PAYMENT_TTL_S": "8",
            "PAYGATE_SWEEP_INTERVAL_S": "0.2",
        },
    )
    try:
        key_id, secret = stack.create_key("expiry")
        user = f"u-{uuid.uuid4().hex[:8]}"
        with stack.client(key_id, secret) as client:
            # `kept` is confirmed before `dropped` exists, so only the confirming command's start-up has to fit
            # in kept's TTL (a few seconds on a loaded machine); `dropped` then simply waits for the sweeper.
            kept = client.top_up(
                pb.TopUpRequest(
                    order_id="kept", user_id=user, amount_minor=400, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
                )
            )
            assert kept.status == pb.PAYMENT_STATUS_PENDING
            confirmed = stack.cli("sandbox", "confirm", kept.payment_id)  # the channel's notification, in time
            assert confirmed.returncode == 0, confirmed.stderr
            assert json.loads(confirmed.stdout)["status"] == "PAYMENT_STATUS_SUCCEEDED"

            dropped = client.top_up(
                pb.TopUpRequest(
                    order_id="dropped", user_id=user, amount_minor=250, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
                )
            )
            assert dropped.status == pb.PAYMENT_STATUS_PENDING

            def closed() -> bool:
                payment = client.get_payment(pb.GetPaymentRequest(payment_id=dropped.payment_id))
                return payment.status == pb.PAYMENT_STATUS_CLOSED

            wait_until(closed, attempts=800, what="the sweeper closing the expired payment")
            assert client.get_payment(pb.GetPaymentRequest(payment_id=kept.payment_id)).status == (
                pb.PAYMENT_STATUS_SUCCEEDED
            )

            late = stack.cli("sandbox", "confirm", dropped.payment_id)  # the channel charged the payer after all
            assert late.returncode == 0, late.stderr
            refunded = client.get_payment(pb.GetPaymentRequest(payment_id=dropped.payment_id))
            assert refunded.status == pb.PAYMENT_STATUS_CLOSED
            assert refunded.refunded_minor == 250 and "refunded automatically" in refunded.failure_reason
            assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 400
            kinds = [t.kind for t in client.list_transactions(pb.ListTransactionsRequest(user_id=user)).transactions]
            assert kinds == ["refund", "late_payment", "top_up"]

        verified = stack.cli("ledger", "verify")
        assert verified.returncode == 0, verified.stdout
    finally:
        assert stack.stop() == 0
