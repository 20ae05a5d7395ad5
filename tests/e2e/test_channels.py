"""Payments through the four providers, end to end: `paygate serve` with its channel simulator and notification
edge, real processes over real gRPC and HTTP. Each payment is PENDING with what the payer needs, and turns
SUCCEEDED by the provider's own signed notification; hostile callbacks move nothing and are kept with a reason."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.e2e.channel_support import DECLINE_CARDS, Simulator, counter, wait_for_status
from tests.support import Stack, start_stack, wait_until
from workers.domain.pricing import split_fee

SIM_CHANNEL = {
    pb.PAYMENT_METHOD_ALIPAY: "alipay",
    pb.PAYMENT_METHOD_WECHAT_PAY: "wechatpay",
    pb.PAYMENT_METHOD_UNIONPAY: "unionpay",
    pb.PAYMENT_METHOD_CARD: "card",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(
        Path(tmp_path_factory.mktemp("channels")),
        workers=2,
        channels=True,
        # The janitor asks soon, so that tests about lost notifications finish quickly.
        extra_env={"PAYGATE_JANITOR_INTERVAL_S": "0.5", "PAYGATE_JANITOR_FIRST_CHECK_S": "1"},
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[PaygateClient]:
    key_id, secret = stack.create_key("channels")
    with stack.client(key_id, secret) as opened:
        yield opened


@pytest.fixture(scope="module")
def sim(stack: Stack) -> Simulator:
    return Simulator.of(stack)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def notification_verdicts(stack: Stack, attempt_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(stack.data_dir / "paygate.sqlite3") as connection:
        rows = connection.execute(
            "SELECT verdict, reason FROM channel_notifications WHERE attempt_id = ? ORDER BY notification_id",
            (attempt_id,),
        )
        return [(verdict, reason) for verdict, reason in rows]


def purchase(client: PaygateClient, method: int, **extra: object) -> pb.Payment:
    return client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("o"),
            user_id=uid("learner"),
            amount_minor=12_34,
            currency="CNY",
            method=method,  # type: ignore[arg-type]
            payee_id="creator-1",
            description="Python for data work",
            **extra,  # type: ignore[arg-type]
        )
    )


@pytest.mark.parametrize(
    ("method", "extra", "handed_back"),
    [
        (pb.PAYMENT_METHOD_ALIPAY, {}, "qr_code"),
        (pb.PAYMENT_METHOD_WECHAT_PAY, {}, "qr_code"),
        (pb.PAYMENT_METHOD_UNIONPAY, {"scene": pb.PAYMENT_SCENE_IN_APP}, "prepay_id"),
    ],
    ids=["alipay", "wechatpay", "unionpay"],
)
def test_a_payment_is_pending_then_succeeds_by_the_providers_notification(
    stack: Stack, client: PaygateClient, method: int, extra: dict[str, object], handed_back: str
) -> None:
    payment = purchase(client, method, **extra)
    assert payment.status == pb.PAYMENT_STATUS_PENDING
    assert getattr(payment, handed_back), f"the payer needs a {handed_back}"
    assert payment.attempt_id and payment.entry_id == ""
    paid = wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)
    assert paid.channel_trade_no and paid.entry_id
    # The stack's default platform fee (2000 bps), by the one pricing rule.
    assert (paid.creator_amount_minor, paid.platform_fee_minor) == split_fee(paid.amount_minor, 2000)
    assert ("applied", "") in notification_verdicts(stack, payment.attempt_id)


def test_a_card_payment_with_a_good_token_succeeds_and_its_webhook_changes_nothing(
    stack: Stack, client: PaygateClient, sim: Simulator
) -> None:
    payment = purchase(client, pb.PAYMENT_METHOD_CARD, card_token=sim.card_token())
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED  # captured at once by the processor
    assert payment.channel_trade_no.startswith("auth_")
    assert sim.order("card", payment.attempt_id)["status"] in ("captured", "paid", "succeeded")


@pytest.mark.parametrize("code", sorted(DECLINE_CARDS))
def test_a_declined_card_is_a_failed_payment_with_a_reason(client: PaygateClient, sim: Simulator, code: str) -> None:
    payment = purchase(client, pb.PAYMENT_METHOD_CARD, card_token=sim.card_token(DECLINE_CARDS[code]))
    assert payment.status == pb.PAYMENT_STATUS_FAILED
    assert payment.failure_reason and payment.entry_id == ""
    if code == "fraudulent":
        assert "fraud" not in payment.failure_reason.lower()  # the payer is not told why the issuer refused


HOSTILE_TARGETS: dict[str, tuple[int, dict[str, object]]] = {
    "alipay": (pb.PAYMENT_METHOD_ALIPAY, {}),
    "wechatpay": (pb.PAYMENT_METHOD_WECHAT_PAY, {}),
    "unionpay": (pb.PAYMENT_METHOD_UNIONPAY, {"scene": pb.PAYMENT_SCENE_IN_APP}),
}


@pytest.mark.parametrize(
    ("channel", "mode", "reason"),
    [
        (channel, mode, reason)
        for channel in ("alipay", "wechatpay", "unionpay")
        for mode, reason in (
            ("forged", "bad_signature"),
            ("wrong_amount", "amount_mismatch"),
            ("wrong_currency", "currency_mismatch"),
            ("wrong_app_id", "wrong_merchant"),
        )
    ],
)
def test_a_hostile_callback_moves_nothing_and_the_janitor_settles_by_query(
    stack: Stack, client: PaygateClient, sim: Simulator, channel: str, mode: str, reason: str
) -> None:
    method, extra = HOSTILE_TARGETS[channel]
    rejected_before = counter(stack, "paygate_channel_notifications_total", verdict="rejected", reason=reason)
    with sim.misbehaving(channel, callback=[mode]):
        payment = purchase(client, method, **extra)
        paid = wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_SUCCEEDED, "settled by the janitor")
    verdicts = notification_verdicts(stack, payment.attempt_id)
    assert paid.amount_minor == 12_34 and paid.entry_id
    # The callback was kept with its reason (a forged one names no attempt we trust: look it up by reason).
    with sqlite3.connect(stack.data_dir / "paygate.sqlite3") as connection:
        reasons = {row[0] for row in connection.execute("SELECT reason FROM channel_notifications")}
    assert reason in reasons
    assert ("applied", "") not in verdicts  # the money moved by the janitor's query, not by the hostile callback
    assert counter(stack, "paygate_channel_notifications_total", verdict="rejected", reason=reason) > rejected_before


def test_duplicate_callbacks_move_the_money_once(stack: Stack, client: PaygateClient, sim: Simulator) -> None:
    user = uid("learner")
    with sim.misbehaving("wechatpay", callback=["duplicate"]):
        top_up = client.top_up(
            pb.TopUpRequest(
                order_id=uid("t"), user_id=user, amount_minor=5_00, currency="CNY", method=pb.PAYMENT_METHOD_WECHAT_PAY
            )
        )
        wait_for_status(client, top_up.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)
        wait_until(
            lambda: sim.order("wechatpay", top_up.attempt_id)["notifications"]["acknowledged"] >= 2,
            attempts=200,
            what="both deliveries acknowledged",
        )
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 5_00
    verdicts = [verdict for verdict, _ in notification_verdicts(stack, top_up.attempt_id)]
    assert verdicts.count("applied") == 1 and "duplicate" in verdicts


def test_the_edge_refuses_unknown_endpoints_and_oversized_bodies(stack: Stack) -> None:
    assert httpx.post(f"http://{stack.notify_listen}/notify/paypal", content=b"x", timeout=10).status_code == 404
    too_big = httpx.post(f"http://{stack.notify_listen}/notify/alipay", content=b"x" * 70_000, timeout=10)
    assert too_big.status_code == 413


def test_a_garbage_callback_is_kept_rejected_and_answered_in_the_providers_format(stack: Stack) -> None:
    reply = httpx.post(f"http://{stack.notify_listen}/notify/alipay", content=b"not=a&real=notification", timeout=10)
    assert (reply.status_code, reply.text) == (200, "failure")  # Alipay retries anything but "success"
    reply = httpx.post(f"http://{stack.notify_listen}/notify/wechatpay", content=b"{}", timeout=10)
    assert reply.status_code >= 400


def test_the_ledger_verifies_after_channel_payments(stack: Stack, client: PaygateClient) -> None:
    purchase(client, pb.PAYMENT_METHOD_ALIPAY)
    result = stack.cli("ledger", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger verify: OK" in result.stdout


@pytest.mark.parametrize("mode", ["delay_ms", "out_of_order", "never"])
def test_late_out_of_order_or_missing_callbacks_still_settle_once(
    stack: Stack, client: PaygateClient, sim: Simulator, mode: str
) -> None:
    user = uid("learner")
    with sim.misbehaving("alipay", callback=[mode], callback_delay_ms=1500):
        top_up = client.top_up(
            pb.TopUpRequest(
                order_id=uid("t"), user_id=user, amount_minor=3_00, currency="CNY", method=pb.PAYMENT_METHOD_ALIPAY
            )
        )
        wait_for_status(client, top_up.payment_id, pb.PAYMENT_STATUS_SUCCEEDED, attempts=600)
        # A refund too, so that out-of-order delivery has a later notification to put first.
        refund = pb.RefundPaymentRequest(payment_id=top_up.payment_id, refund_id=uid("r"), amount_minor=1_00)
        client.refund_payment(refund)
        wait_until(
            lambda: client.refund_payment(refund).status == pb.REFUND_STATUS_SUCCEEDED,
            attempts=600,
            what="the refund settled",
        )
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 2_00
    verdicts = [verdict for verdict, _ in notification_verdicts(stack, top_up.attempt_id)]
    assert "rejected" not in verdicts and verdicts.count("applied") <= 2
