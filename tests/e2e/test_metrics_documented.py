"""Every series a running stack exports is in docs/metrics.md, with its type and labels, and every series there is
exported (docs/metrics.md). A real `paygate serve` with channels serves some traffic first: wallet and channel
payments, a refund, a transfer, a refused signature, a webhook endpoint that cannot be reached.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.e2e.channel_support import wait_for_status
from tests.support import REPO_ROOT, Stack, start_stack, wait_until

DOC = REPO_ROOT / "docs" / "metrics.md"

# Documented series that this traffic does not produce, each with what makes it appear. Anything else documented
# must be exported, and nothing may be exported that is not documented.
ONLY_AFTER = {
    "paygate_webhook_dead_letters_total": "an event given up on after the whole retry schedule (about 3 days)",
    "paygate_events_streamed_total": "a StreamEvents subscriber",
    "paygate_risk_decisions_total": "a risk rules file (PAYGATE_RISK_RULES; none by default)",
    "paygate_risk_rule_hits_total": "a risk rule that fires (a rules file with matching rules)",
    "paygate_risk_rule_reloads_total": "a change of the risk rules file",
    "paygate_channel_refusals_total": "an open circuit or a full channel",
    "paygate_ledger_retries_total": "a stale fence or a deadlock",
    "paygate_gateway_admission_refusals_total": "a request read timeout, an eviction, a rate limit",
    "paygate_reconciliation_items_total": "a `paygate reconcile` run",
}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """`{series: (type, labels)}` from the tables of docs/metrics.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.fullmatch(r"\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|.*", line)
        if match:
            labels = frozenset(re.findall(r"`([a-z_]+)`", match.group(3)))
            assert match.group(1) not in rows, f"{match.group(1)} is documented twice"
            rows[match.group(1)] = (match.group(2), labels)
    return rows


def exported(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """`{series: (type, labels)}` of an exposition; histograms by their name (labels without `le`)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    found: dict[str, tuple[str, set[str]]] = {name: (kind, set()) for name, kind in types.items()}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+", line)
        if not match:
            continue
        name = match.group(1)
        family = name if name in types else re.sub(r"_(bucket|sum|count|created)$", "", name)
        found[family][1].update(set(re.findall(r'([a-zA-Z_]+)="', match.group(2) or "")) - {"le"})
    return {name: (kind, frozenset(labels)) for name, (kind, labels) in found.items()}


@pytest.fixture(scope="module")
def busy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(Path(tmp_path_factory.mktemp("metrics-doc")), workers=2, channels=True)
    try:
        key_id, secret = stack.create_key("metrics-doc")
        with stack.client(key_id, secret) as client:
            traffic(client)
        with stack.client(key_id, "not-the-secret") as impostor, pytest.raises(grpc.RpcError) as refused:
            impostor.quote_price(pb.QuotePriceRequest(list_price_minor=100, currency="CNY"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        yield stack
    finally:
        assert stack.stop() == 0, stack.log()[-4000:]


def traffic(client: PaygateClient) -> None:
    user = uid("learner")
    client.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url="http://127.0.0.1:9/unreachable"))
    client.top_up(
        pb.TopUpRequest(
            order_id=uid("t"), user_id=user, amount_minor=50_00, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    bought = client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("o"),
            user_id=user,
            amount_minor=10_00,
            currency="CNY",
            method=pb.PAYMENT_METHOD_WALLET,
            payee_id="creator-1",
        )
    )
    client.refund_payment(pb.RefundPaymentRequest(refund_id=uid("r"), payment_id=bought.payment_id, amount_minor=1_00))
    client.transfer(
        pb.TransferRequest(
            transfer_id=uid("x"), from_user_id=user, to_user_id=uid("friend"), amount_minor=1_00, currency="CNY"
        )
    )
    pending = client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("o"),
            user_id=user,
            amount_minor=12_34,
            currency="CNY",
            method=pb.PAYMENT_METHOD_ALIPAY,
            payee_id="creator-1",
        )
    )
    wait_for_status(client, pending.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)


def test_every_exported_series_is_documented_and_every_documented_one_exported(busy_stack: Stack) -> None:
    doc = documented()

    def caught_up() -> dict[str, tuple[str, frozenset[str]]] | None:
        # The webhook relay's first failed delivery and the samplers' first round come a moment after the calls.
        found = exported(busy_stack.metrics_text())
        return found if "paygate_webhook_deliveries_total" in found else None

    found = wait_until(caught_up, attempts=600, what="the webhook relay's first delivery attempt")
    undocumented = sorted(set(found) - set(doc))
    assert undocumented == [], f"exported but not in docs/metrics.md: {undocumented}"
    missing = sorted(set(doc) - set(found) - set(ONLY_AFTER))
    assert missing == [], f"in docs/metrics.md but not exported: {missing}"
    assert set(ONLY_AFTER) <= set(doc)
    wrong = {name: (found[name], doc[name]) for name in found if found[name] != doc[name]}
    assert wrong == {}, "type or labels differ (exported, documented)"
