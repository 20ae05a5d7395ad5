"""The risk engine through a real `paygate serve` (docs/risk.md): ALLOW, REVIEW (0.84 from two 0.6 signals),
DENY as FAILED_PRECONDITION with the rule names, reviews released and refused with the CLI, velocity in the
stack's Redis, rules reloaded without a restart, and a bad rules file refused while the rules in force stay."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack, wait_until

RULES = """version = 1
[thresholds]
review_at = 0.5
deny_at = 0.9

[[rules]]
name = "big-purchase"
kind = "amount_limit"
operations = ["CreatePayment"]
currency = "CNY"
max_amount_minor = 100000
probability = 0.6

[[rules]]
name = "region"
kind = "region_mismatch"
regions = { US = ["USD"] }
probability = 0.6

[[rules]]
name = "burst"
kind = "velocity_count"
window_s = 3600
max_count = 8
probability = 0.95

[[rules]]
name = "blocked-devices"
kind = "blocklist"
device_ids = ["dev-blocked"]
probability = 1
"""


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tmp_path_factory.mktemp("risk")) / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module")
def risk_stack(tmp_path_factory: pytest.TempPathFactory, rules_file: Path) -> Iterator[Stack]:
    running = start_stack(
        Path(tmp_path_factory.mktemp("risk-stack")), workers=2, extra_env={"PAYGATE_RISK_RULES": str(rules_file)}
    )
    yield running
    assert running.stop() == 0, running.log()[-4000:]


@pytest.fixture
def client(risk_stack: Stack) -> Iterator[PaygateClient]:
    key_id, secret = risk_stack.create_key(uid("risk"))
    with risk_stack.client(key_id, secret) as signed:
        yield signed


def funded(client: PaygateClient, amount: int = 500_000) -> str:
    user = uid("u")
    client.top_up(
        pb.TopUpRequest(
            order_id=uid("o"), user_id=user, amount_minor=amount, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    return user


def purchase(user: str, amount: int, order: str = "", **risk: str) -> pb.CreatePaymentRequest:
    return pb.CreatePaymentRequest(
        order_id=order or uid("o"),
        user_id=user,
        amount_minor=amount,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        risk=pb.RiskContext(**risk),
    )


def balance(client: PaygateClient, user: str) -> int:
    return client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor


def refusal(call) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, grpc.RpcError]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as raised:
        call()
    status = rpc_status.from_call(raised.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return raised.value.code(), info, raised.value


def test_an_allowed_purchase_is_paid_at_once(client: PaygateClient) -> None:
    user = funded(client)
    paid = client.create_payment(purchase(user, 1_000, region="CN", ip_address="203.0.113.9"))
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED and not paid.HasField("risk")
    assert balance(client, user) == 499_000


def test_deny_is_failed_precondition_naming_the_rules_and_writes_nothing(client: PaygateClient) -> None:
    user = funded(client)
    order = uid("o")
    code, info, error = refusal(lambda: client.create_payment(purchase(user, 1_000, order, device_id="dev-blocked")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.reason, info.metadata["rules"], info.metadata["score"]) == ("RISK_DENIED", "blocked-devices", "1")
    assert "blocked-devices" in error.details()
    code, _, _ = refusal(lambda: client.get_payment(pb.GetPaymentRequest(order_id=order)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert balance(client, user) == 500_000


def test_two_sixty_percent_signals_hold_for_review_then_release_pays_once(
    client: PaygateClient, risk_stack: Stack
) -> None:
    user = funded(client)
    held = client.create_payment(purchase(user, 200_000, region="US"))
    assert held.status == pb.PAYMENT_STATUS_IN_REVIEW
    assert (held.risk.decision, held.risk.score, list(held.risk.reasons)) == (
        pb.RISK_DECISION_REVIEW,
        "0.84",
        ["big-purchase", "region"],
    )
    assert client.get_payment(pb.GetPaymentRequest(payment_id=held.payment_id)).status == pb.PAYMENT_STATUS_IN_REVIEW
    assert balance(client, user) == 500_000
    listed = risk_stack.cli("risk", "review", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert held.payment_id in {p["payment_id"] for p in json.loads(listed.stdout)["payments"]}
    released = risk_stack.cli("risk", "review", "release", held.payment_id, "--reason", "called the learner", "--json")
    assert released.returncode == 0, released.stderr
    assert json.loads(released.stdout)["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert client.get_payment(pb.GetPaymentRequest(payment_id=held.payment_id)).status == pb.PAYMENT_STATUS_SUCCEEDED
    assert balance(client, user) == 300_000
    again = risk_stack.cli("risk", "review", "release", held.payment_id, "--reason", "twice")
    assert again.returncode == 1 and "not IN_REVIEW" in again.stderr
    assert balance(client, user) == 300_000


def test_refuse_fails_the_held_payment(client: PaygateClient, risk_stack: Stack) -> None:
    user = funded(client)
    held = client.create_payment(purchase(user, 150_000, region="US"))
    refused = risk_stack.cli("risk", "review", "refuse", held.payment_id, "--reason", "card reported stolen")
    assert refused.returncode == 0, refused.stderr
    now = client.get_payment(pb.GetPaymentRequest(payment_id=held.payment_id))
    assert now.status == pb.PAYMENT_STATUS_FAILED
    assert now.failure_reason == "refused after risk review: card reported stolen"
    assert balance(client, user) == 500_000


def test_reviews_need_no_valid_rules_file(client: PaygateClient, risk_stack: Stack, tmp_path: Path) -> None:
    """A broken rules file (perhaps why payments are being held) must not stop an operator's review."""
    user = funded(client)
    held = client.create_payment(purchase(user, 150_000, region="US"))
    broken = tmp_path / "broken.toml"
    broken.write_text("version = 1\n[[rules]]\nname = 3\n")
    env = {**risk_stack.env, "PAYGATE_RISK_RULES": str(broken)}
    command = [sys.executable, "-m", "stack", "risk", "review"]
    data_dir = ["--data-dir", str(risk_stack.data_dir)]
    checked = subprocess.run(
        [sys.executable, "-m", "stack", "risk", "check", str(broken)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode != 0  # the file really is broken
    refused = subprocess.run(
        [*command, "refuse", held.payment_id, "--reason", "rules broken", *data_dir],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert refused.returncode == 0, refused.stderr
    assert client.get_payment(pb.GetPaymentRequest(payment_id=held.payment_id)).status == pb.PAYMENT_STATUS_FAILED


def test_velocity_denies_the_burst_in_the_stacks_redis(client: PaygateClient) -> None:
    user = funded(client)  # the top-up is the first of the user's payments in the window
    orders = [uid("o") for _ in range(7)]
    for order in orders:
        assert client.create_payment(purchase(user, 100, order)).status == pb.PAYMENT_STATUS_SUCCEEDED
    assert client.create_payment(purchase(user, 100, orders[0])).status == pb.PAYMENT_STATUS_SUCCEEDED  # a replay
    code, info, _ = refusal(lambda: client.create_payment(purchase(user, 100)))
    assert (code, info.reason, info.metadata["rules"]) == (grpc.StatusCode.FAILED_PRECONDITION, "RISK_DENIED", "burst")
    assert balance(client, user) == 500_000 - 700


def test_rules_reload_without_a_restart_and_a_bad_file_keeps_them(
    client: PaygateClient, risk_stack: Stack, rules_file: Path
) -> None:
    user = funded(client)
    assert client.create_payment(purchase(user, 100, device_id="dev-late")).status == pb.PAYMENT_STATUS_SUCCEEDED
    rules_file.write_text(RULES.replace('["dev-blocked"]', '["dev-blocked", "dev-late"]'))

    def denied() -> bool:
        """A fresh user each time, so that no velocity rule can be what refuses it; the device is the only signal."""
        try:
            client.create_payment(purchase(uid("u"), 100, device_id="dev-late"))
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.FAILED_PRECONDITION and "blocked-devices" in (error.details() or "")
        return False

    # Round-robin over two workers: four denials in a row mean both have applied the change.
    wait_until(lambda: all(denied() for _ in range(4)), attempts=200, interval_s=0.05, what="both workers to apply it")
    pids = dict(risk_stack.state()["children"])
    rules_file.write_text(RULES.replace("probability = 0.6", "probability = 1.6", 1))
    checked = risk_stack.cli("risk", "check", str(rules_file))
    assert checked.returncode == 1 and "probability must be in [0, 1]" in checked.stderr

    def refused_everywhere() -> bool:
        denied()  # each worker notices the change on its next assessment
        return metric(risk_stack.metrics_text(), 'paygate_risk_rule_reloads_total{outcome="refused"}') >= 2

    wait_until(refused_everywhere, attempts=200, interval_s=0.05, what="both workers to refuse the bad file")
    for _ in range(4):  # the rules in force stay: the late device is still denied, on every worker
        assert denied()
    assert risk_stack.state()["children"] == pids  # no worker restarted
    metrics = risk_stack.metrics_text()
    assert 'paygate_risk_decisions_total{decision="deny",method="wallet"}' in metrics
    assert 'paygate_risk_rule_hits_total{rule="blocked-devices"}' in metrics
    # Every worker's reload is on record, the applied one with the content's hash, the refused one with why.
    listed = risk_stack.cli("audit", "list", "--action", "risk.", "--limit", "1000", "--json")
    assert listed.returncode == 0, listed.stderr
    reloads = [e for e in json.loads(listed.stdout)["entries"] if e["action"].startswith("risk.rules_")]
    applied = [e for e in reloads if e["action"] == "risk.rules_applied"]
    refused = [e for e in reloads if e["action"] == "risk.rules_refused"]
    assert len({e["details"]["worker"] for e in applied}) == 2 and len({e["details"]["worker"] for e in refused}) == 2
    assert all(e["actor"] == "system" and len(e["details"]["sha256"]) == 64 for e in applied)
    assert all("probability must be in [0, 1]" in e["details"]["reason"] for e in refused)
    assert risk_stack.cli("audit", "verify").returncode == 0
    rules_file.write_text(RULES)


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_risk_fields_are_validated_and_a_phone_number_never_echoed(client: PaygateClient) -> None:
    user = funded(client)
    request = purchase(user, 100, ip_address="10.0.0.1:443", phone_number="+0123", region="cn", device_id="a b")
    code, info, error = refusal(lambda: client.create_payment(request))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            detail.Unpack(bad)
    fields = {violation.field for violation in bad.field_violations}
    assert fields == {"risk.ip_address", "risk.phone_number", "risk.region", "risk.device_id"}
    assert "+0123" not in error.details()


def test_a_phone_number_is_blocked_by_its_fingerprint_and_never_kept_in_clear(
    client: PaygateClient, risk_stack: Stack, rules_file: Path
) -> None:
    phone = "+8613800138099"
    printed = subprocess.run(
        [sys.executable, "-m", "stack", "risk", "phone", "--data-dir", str(risk_stack.data_dir)],
        env=risk_stack.env,
        input=phone + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    shown = json.loads(printed.stdout)
    assert shown["phone"].endswith("99") and "138001380" not in shown["phone"]
    fingerprint = shown["fingerprint"]
    rules_file.write_text(RULES.replace('device_ids = ["dev-blocked"]', f'phone_fingerprints = ["{fingerprint}"]'))

    def denied() -> bool:
        try:
            client.create_payment(purchase(uid("u"), 100, phone_number=phone))
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.FAILED_PRECONDITION and "blocked-devices" in (error.details() or "")
        return False

    try:
        wait_until(lambda: all(denied() for _ in range(4)), attempts=200, interval_s=0.05, what="the phone blocked")
        user = funded(client)  # another number passes, and a held payment with a phone is stored without it
        held = client.create_payment(purchase(user, 200_000, region="US", phone_number="+8613800138077"))
        assert held.status == pb.PAYMENT_STATUS_IN_REVIEW
    finally:
        rules_file.write_text(RULES)
    digits = ("8613800138099", "8613800138077")
    stored = b"".join(path.read_bytes() for path in risk_stack.data_dir.glob("paygate.sqlite3*"))
    assert not any(number.encode() in stored for number in digits)
    assert not any(number in risk_stack.log() for number in digits)
