"""One hanging channel harms nobody else (docs/channels.md, "One slow channel").

WeChat Pay stops answering (the simulator holds every request). While learners keep trying to pay with it,
wallet purchases and Alipay payments keep succeeding; WeChat payments end with a clear UNAVAILABLE (its bounded
slots are busy, or its circuit is open), or PENDING with an unknown attempt, or SUCCEEDED when the provider's
notification overtook its own hung answer — never a hung call and never an INTERNAL error. Afterwards the
janitor resolves every unknown attempt by query, and nobody was charged twice. Outcomes are counted; no timing
is asserted."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from tests.e2e.channel_support import Simulator, counter
from tests.support import Stack, start_stack, wait_until

HUNG_CALLS = 24
WALLET_PURCHASES = 60
ALIPAY_PAYMENTS = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(
        Path(tmp_path_factory.mktemp("isolation")),
        workers=2,
        channels=True,
        extra_env={
            "PAYGATE_CHANNEL_READ_TIMEOUT_S": "3",
            "PAYGATE_CHANNEL_BREAKER_FAILURES": "3",
            "PAYGATE_CHANNEL_BREAKER_OPEN_S": "30",
            "PAYGATE_JANITOR_INTERVAL_S": "0.5",
            "PAYGATE_JANITOR_FIRST_CHECK_S": "1",
        },
    )
    yield started
    started.stop()


def outcome(call: Callable[[], pb.Payment]) -> str:
    try:
        return pb.PaymentStatus.Name(call().status)
    except grpc.RpcError as error:
        return error.code().name


def test_a_hanging_channel_does_not_slow_the_others(stack: Stack) -> None:
    sim = Simulator.of(stack)
    key_id, secret = stack.create_key("isolation")
    learner = f"rich-{uuid.uuid4().hex[:6]}"
    # No client retries: each outcome counted is one attempt's (a refusal must come fast, not be retried away).
    with stack.client(key_id, secret, timeout_s=30, retry=NO_RETRY) as client:
        client.top_up(
            pb.TopUpRequest(
                order_id=f"fill-{learner}",
                user_id=learner,
                amount_minor=10_000_00,
                currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX,
            )
        )

        def pay(method: int, index: int) -> Callable[[], pb.Payment]:
            request = pb.CreatePaymentRequest(
                order_id=f"iso-{method}-{index}-{uuid.uuid4().hex[:6]}",
                user_id=learner,
                amount_minor=1_00,
                currency="CNY",
                method=method,  # type: ignore[arg-type]
                payee_id="creator-iso",
            )
            return lambda: client.create_payment(request)

        calls = [("wechat", pay(pb.PAYMENT_METHOD_WECHAT_PAY, i)) for i in range(HUNG_CALLS)]
        calls += [("wallet", pay(pb.PAYMENT_METHOD_WALLET, i)) for i in range(WALLET_PURCHASES)]
        calls += [("alipay", pay(pb.PAYMENT_METHOD_ALIPAY, i)) for i in range(ALIPAY_PAYMENTS)]
        with sim.misbehaving("wechatpay", timeout=True), ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda named: (named[0], outcome(named[1])), calls))
        outcomes = Counter(results)
        print(f"outcomes while WeChat Pay hangs: {dict(outcomes)}")

        assert outcomes[("wallet", "PAYMENT_STATUS_SUCCEEDED")] == WALLET_PURCHASES
        assert (
            outcomes[("alipay", "PAYMENT_STATUS_PENDING")] + outcomes[("alipay", "PAYMENT_STATUS_SUCCEEDED")]
            == ALIPAY_PAYMENTS
        )
        wechat = {status: n for (name, status), n in outcomes.items() if name == "wechat"}
        # PENDING: our call timed out, the attempt is unknown until a query. SUCCEEDED: the simulator took the order
        # and paid it, and its notification settled the payment while our call still waited for the answer.
        assert set(wechat) <= {"UNAVAILABLE", "PAYMENT_STATUS_PENDING", "PAYMENT_STATUS_SUCCEEDED"}, wechat
        assert wechat.get("UNAVAILABLE", 0) > 0  # refused fast: busy slots or an open circuit
        refused = counter(stack, "paygate_channel_refusals_total", channel="wechat_pay")
        assert refused >= wechat.get("UNAVAILABLE", 0)

    # Once WeChat answers again, the janitor settles every attempt it left unknown; each order was paid once.
    def settled() -> bool:
        orders = sim.control("GET", "/orders?channel=wechatpay&limit=500")["orders"]
        return all(order["status"] != "pending" for order in orders)

    wait_until(settled, attempts=600, interval_s=0.1, what="the simulator's WeChat orders paid")
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout
