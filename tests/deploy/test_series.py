"""Every series the dashboard and the alert rules read is exported by a running stack.

A real `paygate serve` with channels, the risk rules of deploy/risk and a webhook endpoint that always fails is
driven through the calls that create the labelled series: top-ups and wallet purchases, a refused purchase, a
refund, a bad signature, a rate-limited key, a channel payment confirmed by callback, a channel whose circuit
opens, an event stream, a dead-lettered webhook, a reconciliation run and a changed risk-rules file. Its /metrics
is then compared with the metric names of every dashboard query and rule expression
(tests/deploy/test_series_promql.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest

from paygate.client import PaygateClient
from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from tests.deploy.test_series_promql import CONTRACT_SERIES, base_name, referenced_series
from tests.e2e.channel_support import Simulator, wait_for_status
from tests.support import REPO_ROOT, Stack, start_stack, wait_until
from tests.webhook_receiver import Receiver

# Series that a short run cannot create, each with the reason; they are checked in the source instead.
CONDITIONAL = {
    "paygate_ledger_retries_total": "a ledger transaction retried for a stale fencing token or a deadlock "
    "(tests/integration create both on purpose; a clean run has neither)",
}
# Series from other exporters: Prometheus itself and kube-state-metrics.
EXTERNAL_PREFIXES = ("up", "kube_")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def exported_names(metrics_text: str) -> set[str]:
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in metrics_text.splitlines() if line[:1].isalpha()}


def wanted() -> set[str]:
    return {
        name
        for name in referenced_series()
        if base_name(name) not in CONDITIONAL and not name.startswith(EXTERNAL_PREFIXES) and name != "up"
    }


def _wallet_traffic(client: PaygateClient) -> None:
    """A top-up, a purchase and a refund; a refused purchase; a payer over the daily-amount risk rule."""
    user, rich = uid("u"), uid("rich")
    for payer, amount_minor in ((user, 5_000), (rich, 2_500_000)):
        client.top_up(pb.TopUpRequest(order_id=uid("t"), user_id=payer, amount_minor=amount_minor, currency="CNY",
                                      method=pb.PAYMENT_METHOD_SANDBOX))  # fmt: skip
    paid = client.create_payment(pb.CreatePaymentRequest(order_id=uid("o"), user_id=user, amount_minor=1_000,
                                 currency="CNY", method=pb.PAYMENT_METHOD_WALLET, payee_id="creator"))  # fmt: skip
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    client.refund_payment(pb.RefundPaymentRequest(payment_id=paid.payment_id, refund_id=uid("r"), amount_minor=400))
    client.create_payment(pb.CreatePaymentRequest(order_id=uid("o"), user_id=rich, amount_minor=2_100_000,
                          currency="CNY", method=pb.PAYMENT_METHOD_WALLET, payee_id="creator"))  # fmt: skip
    with pytest.raises(grpc.RpcError) as refused:  # more than is in the wallet
        client.create_payment(pb.CreatePaymentRequest(order_id=uid("o"), user_id=uid("poor"), amount_minor=10,
                              currency="CNY", method=pb.PAYMENT_METHOD_WALLET))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _refusals(stack: Stack, key_id: str) -> None:
    """A bad signature, and a key limited to one call an hour called three times."""
    with stack.client(key_id, "not-the-secret", retry=NO_RETRY) as forged, pytest.raises(grpc.RpcError) as error:
        forged.get_balance(pb.GetBalanceRequest(user_id="u", currency="CNY"))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    result = stack.cli("keys", "create", "--name", "limited", "--rate", "1/h", "--burst", "1", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    codes = []
    with stack.client(created["key_id"], created["secret"], retry=NO_RETRY) as limited:
        for _ in range(3):
            try:
                limited.get_balance(pb.GetBalanceRequest(user_id="u", currency="CNY"))
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as refused:
                codes.append(refused.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes


def _channel_traffic(stack: Stack, client: PaygateClient) -> None:
    """An Alipay payment the simulator pays and confirms by callback; a WeChat Pay 5xx that opens its circuit."""
    sim = Simulator.of(stack)
    payment = client.create_payment(pb.CreatePaymentRequest(order_id=uid("o"), user_id=uid("u"), amount_minor=990,
                                    currency="CNY", method=pb.PAYMENT_METHOD_ALIPAY, payee_id="creator"))  # fmt: skip
    wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)
    with sim.misbehaving("wechatpay", http_5xx=5):
        for _ in range(3):  # the first provider call fails (5xx), which opens the circuit for the next ones
            with contextlib.suppress(grpc.RpcError):  # a refused call answers UNAVAILABLE, a failed one PENDING
                client.create_payment(pb.CreatePaymentRequest(order_id=uid("o"), user_id=uid("u"), amount_minor=10,
                                      currency="CNY", method=pb.PAYMENT_METHOD_WECHAT_PAY))  # fmt: skip
    day = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    reconciled = stack.cli("reconcile", "--channel", "alipay", "--date", day, "--json")
    assert reconciled.returncode in (0, 1), reconciled.stderr


def _small_purchase(client: PaygateClient) -> None:
    """A top-up and a purchase: the risk engine assesses the purchase (top-ups are not assessed)."""
    user = uid("u")
    client.top_up(pb.TopUpRequest(order_id=uid("t"), user_id=user, amount_minor=100, currency="CNY",
                                  method=pb.PAYMENT_METHOD_SANDBOX))  # fmt: skip
    client.create_payment(pb.CreatePaymentRequest(order_id=uid("o"), user_id=user, amount_minor=10, currency="CNY",
                                                  method=pb.PAYMENT_METHOD_WALLET))  # fmt: skip


def _follow_events(client: PaygateClient, received: list[pb.Event]) -> None:
    """Read a stream until the client closes. Not left after the first event: a worker counts the events it sent
    once their whole page is out, so a stream cut in the middle of a page is never counted."""
    with contextlib.suppress(Exception):  # the stream ends, one way or another, when the test closes the client
        for event in client.stream_events(reconnect=False):
            received.append(event)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    receiver = Receiver()
    receiver.status = 500  # every delivery fails: one retry, then a dead letter
    data_dir = Path(tmp_path_factory.mktemp("series"))
    risk_rules = data_dir / "risk-rules.toml"
    risk_rules.write_text((REPO_ROOT / "deploy" / "risk" / "rules.toml").read_text())
    stack = start_stack(
        data_dir,
        workers=2,
        channels=True,
        extra_env={
            "PAYGATE_RISK_RULES": str(risk_rules),
            "PAYGATE_WEBHOOK_RETRY_SCHEDULE_S": "0.2",
            "PAYGATE_CHANNEL_BREAKER_FAILURES": "1",
            "PAYGATE_CHANNEL_BREAKER_OPEN_S": "60",
        },
    )
    try:
        key_id, secret = stack.create_key("series")
        # No client retries: each refusal below is the one the test means to cause.
        with stack.client(key_id, secret, retry=NO_RETRY) as client:
            client.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url=receiver.url))
            _wallet_traffic(client)
            # A worker looks at the rules file when it assesses a payment (at most once a second): the payments
            # below find it changed.
            risk_rules.write_text(risk_rules.read_text() + "\n# changed: the workers apply the file again\n")
            _refusals(stack, key_id)
            received: list[pb.Event] = []
            threading.Thread(target=_follow_events, args=(client, received), daemon=True).start()
            _channel_traffic(stack, client)
            expected = wanted() - {name for name in wanted() if base_name(name) in CONTRACT_SERIES}

            def all_there() -> bool:
                present = expected <= exported_names(stack.metrics_text())
                if not present:  # callbacks, relays and dead letters happen in the background; a purchase makes
                    _small_purchase(client)  # the worker that takes it look at the risk rules file again
                return present

            with contextlib.suppress(AssertionError):  # the comparison below names what is missing
                wait_until(all_there, attempts=120, interval_s=0.25, what="every series")
            assert received, "the event stream sent nothing"
        yield exported_names(stack.metrics_text())
    finally:
        stack.stop()
        receiver.close()


def _missing(exported: set[str]) -> set[str]:
    return {base_name(name) for name in wanted() - exported}


def test_every_series_of_the_dashboard_and_rules_is_exported(exported: set[str]) -> None:
    assert sorted(_missing(exported) - CONTRACT_SERIES) == []


def test_the_series_issue_11_adds_are_exported(exported: set[str]) -> None:
    assert sorted(_missing(exported) & CONTRACT_SERIES) == []


def test_the_conditional_series_are_declared_in_the_source() -> None:
    sources = "\n".join(path.read_text() for path in (REPO_ROOT / "runtime").rglob("*.py"))
    for name in CONDITIONAL:
        assert f'"{name}"' in sources, name
