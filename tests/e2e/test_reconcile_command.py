"""`paygate reconcile` end to end: a stack with its channel simulator, payments through Alipay and WeChat Pay paid
by the simulator, then the command fetching the day's real bill over HTTP — all matched, then each statement fault
of the simulator reported as its kind, then an operator's correction booked once as a journal entry that
`paygate ledger verify` accepts (docs/reconciliation.md)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from paygate.v1 import payment_gateway_pb2 as pb
from runtime import audit
from tests.e2e.channel_support import Simulator, counter, wait_for_status
from tests.support import REPO_ROOT, Stack, start_stack, wait_until

SHANGHAI = timezone(timedelta(hours=8))


def shanghai_today() -> str:
    return datetime.now(SHANGHAI).date().isoformat()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(Path(tmp_path_factory.mktemp("reconcile")), workers=2, channels=True)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def sim(stack: Stack) -> Simulator:
    return Simulator.of(stack)


@pytest.fixture(scope="module")
def paid(stack: Stack) -> dict[str, set[str]]:
    """Two Alipay (QR) purchases and one WeChat Pay (Native QR) top-up, SUCCEEDED: attempt ids by channel."""
    now = datetime.now(SHANGHAI)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), SHANGHAI)
    if midnight - now < timedelta(seconds=60):
        # Not a timing assertion: the payments and the statement must fall on the same Beijing day.
        time.sleep((midnight - now).total_seconds() + 1)
    key_id, secret = stack.create_key("reconcile")
    created: dict[str, list[pb.Payment]] = {"alipay": [], "wechat_pay": [], "unionpay": [], "card": []}
    with stack.client(key_id, secret) as client:
        for _ in range(2):
            created["alipay"].append(
                client.create_payment(
                    pb.CreatePaymentRequest(
                        order_id=f"o-{uuid.uuid4().hex[:10]}",
                        user_id="learner-1",
                        amount_minor=12_34,
                        currency="CNY",
                        method=pb.PAYMENT_METHOD_ALIPAY,
                        payee_id="creator-1",
                        description="Python for data work",
                        scene=pb.PAYMENT_SCENE_QR,
                    )
                )
            )
        created["wechat_pay"].append(
            client.top_up(
                pb.TopUpRequest(
                    order_id=f"t-{uuid.uuid4().hex[:10]}",
                    user_id="learner-2",
                    amount_minor=5_00,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_WECHAT_PAY,
                )
            )
        )
        created["unionpay"].append(
            client.top_up(
                pb.TopUpRequest(
                    order_id=f"u-{uuid.uuid4().hex[:10]}",
                    user_id="learner-3",
                    amount_minor=7_00,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_UNIONPAY,
                    scene=pb.PAYMENT_SCENE_IN_APP,
                )
            )
        )
        created["card"].append(
            client.create_payment(
                pb.CreatePaymentRequest(
                    order_id=f"c-{uuid.uuid4().hex[:10]}",
                    user_id="learner-4",
                    amount_minor=9_00,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_CARD,
                    card_token=Simulator.of(stack).card_token(),
                )
            )
        )
        for payments in created.values():
            for payment in payments:
                wait_for_status(client, payment.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)
        # A settled refund through each provider, so that refund lines are matched too.
        for channel in ("wechat_pay", "unionpay", "card"):
            payment = created[channel][0]
            refund = pb.RefundPaymentRequest(payment_id=payment.payment_id, refund_id=f"r-{channel}", amount_minor=1_00)
            wait_until(
                lambda refund=refund: client.refund_payment(refund).status == pb.REFUND_STATUS_SUCCEEDED,
                attempts=300,
                what=f"the {channel} refund settled",
            )
    return {channel: {p.attempt_id for p in payments} for channel, payments in created.items()}


def reconcile(stack: Stack, channel: str) -> tuple[int, dict[str, Any]]:
    # The provider's day: China time for the Chinese providers, UTC for the card processor.
    day = datetime.now(UTC).date().isoformat() if channel == "card" else shanghai_today()
    result = stack.cli("reconcile", "--channel", channel, "--date", day, "--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def test_statements_that_agree_match_every_payment(stack: Stack, paid: dict[str, set[str]]) -> None:
    for channel, attempts in paid.items():
        code, run = reconcile(stack, channel)
        assert (code, run["unmatched"], run["items"]) == (0, 0, []), run
        refunds = 1 if channel != "alipay" else 0
        assert run["lines"] == run["matched"] == len(attempts) + refunds


FAULTS = [
    ("missing_line", "missing_at_channel"),
    ("extra_line", "missing_locally"),
    ("amount_differs", "amount_differs"),
    ("duplicate_line", "duplicate_at_channel"),
    ("status_differs", "status_differs"),
]


@pytest.mark.parametrize(("fault", "kind"), FAULTS)
def test_each_statement_fault_is_reported_as_its_kind(
    stack: Stack, sim: Simulator, paid: dict[str, set[str]], fault: str, kind: str
) -> None:
    with sim.misbehaving("alipay", statement=[fault]):
        code, run = reconcile(stack, "alipay")
    assert code == 1, run
    assert [item["kind"] for item in run["items"]] == [kind]
    (item,) = run["items"]
    if fault == "extra_line":
        assert item["out_trade_no"].startswith("SIMEXTRA") and item["ours_minor"] is None
    else:
        assert item["out_trade_no"] in paid["alipay"]  # the simulator's first line of the day is one of ours
    assert run["unmatched"] == 1 and run["counts"][kind] == 1


def test_the_text_report_names_the_item_and_the_stacks_metrics_count_it(
    stack: Stack, sim: Simulator, paid: dict[str, set[str]]
) -> None:
    labels = {"channel": "alipay", "kind": "missing_at_channel"}
    before = counter(stack, "paygate_reconciliation_items_total", **labels)
    with sim.misbehaving("alipay", statement=["missing_line"]):
        result = stack.cli("reconcile", "--channel", "alipay", "--date", shanghai_today())
    assert result.returncode == 1, result.stderr
    assert "missing_at_channel" in result.stdout and "UNMATCHED" in result.stdout
    assert any(attempt in result.stdout for attempt in paid["alipay"])
    assert counter(stack, "paygate_reconciliation_items_total", **labels) == before + 1


def correction_postings(stack: Stack, item_id: str) -> list[tuple[str, str, int]]:
    with sqlite3.connect(stack.data_dir / "paygate.sqlite3") as connection:
        rows = connection.execute(
            "SELECT a.kind, a.subject, p.amount_minor FROM journal_entries e "
            "JOIN postings p ON p.entry_id = e.entry_id JOIN accounts a ON a.account_id = p.account_id "
            "WHERE e.kind = 'correction' AND e.reference_id = ? ORDER BY p.amount_minor",
            (item_id,),
        )
        return [(kind, subject, amount) for kind, subject, amount in rows]


def test_a_correction_is_one_entry_that_verifies_and_is_refused_twice(
    stack: Stack, sim: Simulator, paid: dict[str, set[str]]
) -> None:
    with sim.misbehaving("alipay", statement=["extra_line"]):
        _, run = reconcile(stack, "alipay")
    (item,) = run["items"]

    first = stack.cli("reconcile", "correct", item["item_id"], "--reason", "unknown payment at Alipay, held")
    assert first.returncode == 0, first.stderr
    # Alipay holds 1.00 CNY we never recorded: clearing (what the channel owes us) goes down, suspense up.
    assert correction_postings(stack, item["item_id"]) == [("clearing", "alipay", -100), ("suspense", "alipay", 100)]
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0 and "ledger verify: OK" in verified.stdout, verified.stdout

    again = stack.cli("reconcile", "correct", item["item_id"], "--reason", "twice")
    assert again.returncode == 1 and "already" in again.stderr
    assert len(correction_postings(stack, item["item_id"])) == 2

    # The audit trail has the correction once, with the operator who ran it (docs/audit.md); the refusal left none.
    listed = stack.cli("audit", "list", "--action", "reconcile.correct", "--json")
    assert listed.returncode == 0, listed.stderr
    (audited,) = [e for e in json.loads(listed.stdout)["entries"] if e["subject"] == item["item_id"]]
    assert audited["actor"] == audit.cli_actor()
    assert audited["details"]["clearing_minor"] == -100 and audited["details"]["currency"] == "CNY"
    assert audited["details"]["reason"] == "unknown payment at Alipay, held"
    assert stack.cli("audit", "verify").returncode == 0


def test_a_channel_that_is_not_configured_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env["PAYGATE_CHANNEL_SIM_LISTEN"] = "off"  # dev mode without the simulator: no channels file at all
    today = datetime.now(UTC).date().isoformat()
    command = [sys.executable, "-m", "stack", "reconcile", "--channel", "card", "--date", today]
    command += ["--data-dir", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert result.returncode == 2 and "card channel is not configured" in result.stderr, result.stderr
