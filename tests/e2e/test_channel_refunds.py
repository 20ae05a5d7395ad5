"""Refunds through the providers, and money that arrives after expiry, end to end (docs/channels.md, "Refunds").

A refund of a channel payment is PENDING until the provider confirms it; meanwhile its money waits in the
channel's IN_TRANSIT account, and `paygate ledger verify` checks that account against the pending refunds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.e2e.channel_support import Simulator, wait_for_status
from tests.support import Stack, start_stack, wait_until

CHANNELS = {
    "alipay": (pb.PAYMENT_METHOD_ALIPAY, {}),
    "wechatpay": (pb.PAYMENT_METHOD_WECHAT_PAY, {}),
    "unionpay": (pb.PAYMENT_METHOD_UNIONPAY, {"scene": pb.PAYMENT_SCENE_IN_APP}),
    "card": (pb.PAYMENT_METHOD_CARD, {}),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(
        Path(tmp_path_factory.mktemp("channel-refunds")),
        workers=2,
        channels=True,
        extra_env={
            "PAYGATE_JANITOR_INTERVAL_S": "0.5",
            "PAYGATE_JANITOR_FIRST_CHECK_S": "1",
            # Short-lived orders, for the late-money test; the other tests settle well within this.
            "PAYGATE_PAYMENT_TTL_S": "6",
            "PAYGATE_SWEEP_INTERVAL_S": "0.5",
        },
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[PaygateClient]:
    key_id, secret = stack.create_key("channel-refunds")
    with stack.client(key_id, secret) as opened:
        yield opened


@pytest.fixture(scope="module")
def sim(stack: Stack) -> Simulator:
    return Simulator.of(stack)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def paid_purchase(client: PaygateClient, sim: Simulator, channel: str, amount_minor: int) -> pb.Payment:
    method, extra = CHANNELS[channel]
    if channel == "card":
        extra = {"card_token": sim.card_token()}
    payment = client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("o"),
            user_id=uid("learner"),
            amount_minor=amount_minor,
            currency="CNY",
            method=method,  # type: ignore[arg-type]
            payee_id="creator-r",
            description="Refundable course",
            **extra,  # type: ignore[arg-type]
        )
    )
    return wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)


def refund_until_settled(client: PaygateClient, request: pb.RefundPaymentRequest) -> pb.Refund:
    """The same refund again answers it as it is now: poll until the provider has settled it."""
    settled: list[pb.Refund] = []

    def done() -> bool:
        refund = client.refund_payment(request)
        settled[:] = [refund]
        return refund.status != pb.REFUND_STATUS_PENDING

    wait_until(done, attempts=300, what=f"refund {request.refund_id} settled")
    return settled[0]


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_partial_then_full_refund_through_the_provider(
    stack: Stack, client: PaygateClient, sim: Simulator, channel: str
) -> None:
    payment = paid_purchase(client, sim, channel, 20_00)
    first = pb.RefundPaymentRequest(payment_id=payment.payment_id, refund_id=uid("r"), amount_minor=5_00)
    opened = client.refund_payment(first)
    assert opened.status in (pb.REFUND_STATUS_PENDING, pb.REFUND_STATUS_SUCCEEDED)
    assert opened.payment_status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert refund_until_settled(client, first).status == pb.REFUND_STATUS_SUCCEEDED
    rest = pb.RefundPaymentRequest(payment_id=payment.payment_id, refund_id=uid("r"))
    assert refund_until_settled(client, rest).amount_minor == 15_00
    after = client.get_payment(pb.GetPaymentRequest(payment_id=payment.payment_id))
    assert (after.status, after.refunded_minor) == (pb.PAYMENT_STATUS_REFUNDED, 20_00)
    sim_order = sim.order(channel, payment.attempt_id)
    assert sim_order["refunded_amount"] == 20_00  # the provider returned exactly what we say we refunded
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout


def test_a_refund_beyond_what_is_left_is_refused_and_moves_nothing(client: PaygateClient, sim: Simulator) -> None:
    payment = paid_purchase(client, sim, "wechatpay", 3_00)
    client.refund_payment(pb.RefundPaymentRequest(payment_id=payment.payment_id, refund_id=uid("r"), amount_minor=2_00))
    with pytest.raises(Exception, match="exceeds"):
        client.refund_payment(
            pb.RefundPaymentRequest(payment_id=payment.payment_id, refund_id=uid("r"), amount_minor=2_00)
        )
    assert sim.order("wechatpay", payment.attempt_id)["refunded_amount"] <= 2_00


def test_money_paid_after_expiry_is_refunded_through_the_provider(
    stack: Stack, client: PaygateClient, sim: Simulator
) -> None:
    """UnionPay has no close: expiry asks, finds the order unpaid and closes it here; the payer then pays anyway.
    The money is recorded and goes back through UnionPay by itself."""
    sim.control("POST", "/misbehave/unionpay", {"clear": True})
    payment = client.top_up(
        pb.TopUpRequest(
            order_id=uid("late"),
            user_id=uid("learner"),
            amount_minor=8_00,
            currency="CNY",
            method=pb.PAYMENT_METHOD_UNIONPAY,
            scene=pb.PAYMENT_SCENE_IN_APP,
        )
    )
    sim.control("POST", f"/orders/unionpay/{payment.attempt_id}/abandon")  # the payer wanders off...
    closed = wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_CLOSED, "closed by expiry", attempts=600)
    assert closed.entry_id == ""
    sim.control("POST", f"/orders/unionpay/{payment.attempt_id}/pay")  # ...and pays after all
    wait_until(
        lambda: sim.order("unionpay", payment.attempt_id)["refunded_amount"] == 8_00,
        attempts=400,
        what="the late money refunded at UnionPay",
    )
    late = client.get_payment(pb.GetPaymentRequest(payment_id=payment.payment_id))
    assert late.status == pb.PAYMENT_STATUS_CLOSED and late.refunded_minor == 8_00
    assert "refunded automatically" in late.failure_reason
    assert client.get_balance(pb.GetBalanceRequest(user_id=payment.user_id, currency="CNY")).available_minor == 0
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout


@pytest.mark.parametrize("channel", ["alipay", "wechatpay"])
def test_expiry_closes_the_order_at_the_provider_first_so_it_cannot_be_paid_late(
    stack: Stack, client: PaygateClient, sim: Simulator, channel: str
) -> None:
    method, extra = CHANNELS[channel]
    payment = client.top_up(
        pb.TopUpRequest(
            order_id=uid("exp"), user_id=uid("learner"), amount_minor=4_00, currency="CNY", method=method, **extra
        )
    )
    sim.control("POST", f"/orders/{channel}/{payment.attempt_id}/abandon")
    closed = wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_CLOSED, "closed by expiry", attempts=600)
    assert sim.order(channel, payment.attempt_id)["status"] == "closed"  # closed there, not only here
    late = httpx.post(f"{sim.base_url}/control/orders/{channel}/{payment.attempt_id}/pay", timeout=10)
    assert late.status_code >= 400  # the payer can no longer pay it
    after = client.get_payment(pb.GetPaymentRequest(payment_id=payment.payment_id))
    assert (after.status, after.refunded_minor, after.entry_id) == (pb.PAYMENT_STATUS_CLOSED, 0, "")
    assert closed.failure_reason == after.failure_reason and "closed" in after.failure_reason
