"""A key's limits through a real `paygate serve` (docs/security.md, "Rate limits and quotas"): token buckets per key
and per user, the concurrent-call cap, the message size limit and the deadline default and cap.

Every refusal is checked like the hostile suite checks its own: status, ErrorInfo reason, RetryInfo where the
caller should come back, a bounded message without internals, and no row written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.security.conftest import HostileClient, Outcome, decode_outcome, row_counts
from tests.support import Stack, start_stack, wait_until

DEFAULT_DEADLINE_S = 3
MAX_DEADLINE_S = 10
MAX_MESSAGE_BYTES = 4096


@pytest.fixture(scope="module")
def limits_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        Path(tmp_path_factory.mktemp("limits")),
        workers=2,
        extra_env={
            "PAYGATE_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            "PAYGATE_DEFAULT_CALL_DEADLINE_S": str(DEFAULT_DEADLINE_S),
            "PAYGATE_MAX_CALL_DEADLINE_S": str(MAX_DEADLINE_S),
            # A wallet lock the test holds keeps a call waiting in its worker far longer than any deadline here.
            "PAYGATE_LOCK_WAIT_MS": "60000",
            "PAYGATE_KEY_LAST_USED_FLUSH_S": "0.2",
        },
    )
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


def make_key(stack: Stack, name: str, *limits: str) -> HostileClient:
    result = stack.cli("keys", "create", "--name", name, "--json", *limits)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return HostileClient(stack, created["key_id"], created["secret"], stack.channel())


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def top_up(user: str, amount: int = 100) -> pb.TopUpRequest:
    return pb.TopUpRequest(
        order_id=uid("o"), user_id=user, amount_minor=amount, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    )


def assert_limited(outcome: Outcome, reason: str) -> None:
    outcome.assert_refusal_is_well_formed()
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (outcome.code, outcome.message)
    assert outcome.reason == reason, outcome.message
    assert outcome.retry_delay_ms is not None and outcome.retry_delay_ms > 0


def test_a_burst_beyond_the_keys_bucket_is_refused_with_retry_info_and_writes_nothing(limits_stack: Stack) -> None:
    caller = make_key(limits_stack, "bursty", "--rate", "1/min", "--burst", "3")
    for _ in range(3):
        caller.ok("TopUp", top_up(uid("u")))
    before = row_counts(limits_stack)
    outcome = caller.send("TopUp", top_up(uid("u")))
    assert_limited(outcome, "RATE_LIMITED_KEY")
    assert "1/min" in outcome.message and "burst 3" in outcome.message
    # One token comes back per minute; the delay says so (at most that long, more than a few seconds).
    assert outcome.retry_delay_ms is not None and 1_000 < outcome.retry_delay_ms <= 60_000
    assert row_counts(limits_stack) == before


def test_one_users_limit_leaves_other_users_of_the_key_alone(limits_stack: Stack) -> None:
    caller = make_key(limits_stack, "per-user", "--user-rate", "1/min", "--user-burst", "2")
    user_a, user_b = uid("ua"), uid("ub")
    for _ in range(2):
        caller.ok("TopUp", top_up(user_a))
    before = row_counts(limits_stack)
    outcome = caller.send("TopUp", top_up(user_a))
    assert_limited(outcome, "RATE_LIMITED_USER")
    assert user_a in outcome.message
    assert row_counts(limits_stack) == before
    # The same user through another method counts against the same bucket (GetBalance names user_id too) ...
    assert_limited(caller.send("GetBalance", pb.GetBalanceRequest(user_id=user_a, currency="CNY")), "RATE_LIMITED_USER")
    # ... while another user, and a method that names no user, still get through.
    caller.ok("TopUp", top_up(user_b))
    caller.ok("QuotePrice", pb.QuotePriceRequest(list_price_minor=100, currency="CNY"))


def test_a_transfer_counts_against_its_payer(limits_stack: Stack) -> None:
    caller = make_key(limits_stack, "payer", "--user-rate", "1/min", "--user-burst", "2")
    payer, payee = uid("payer"), uid("payee")
    caller.ok("TopUp", top_up(payer))
    transfer = pb.TransferRequest(
        transfer_id=uid("t"), from_user_id=payer, to_user_id=payee, amount_minor=1, currency="CNY"
    )
    caller.ok("Transfer", transfer)
    again = pb.TransferRequest(
        transfer_id=uid("t"), from_user_id=payer, to_user_id=payee, amount_minor=1, currency="CNY"
    )
    assert_limited(caller.send("Transfer", again), "RATE_LIMITED_USER")
    caller.ok("TopUp", top_up(payee))  # the payee's bucket was not drawn from


def test_set_limits_applies_to_running_gateways(limits_stack: Stack) -> None:
    caller = make_key(limits_stack, "tightened")
    caller.ok("QuotePrice", pb.QuotePriceRequest(list_price_minor=100, currency="CNY"))
    result = limits_stack.cli("keys", "set-limits", caller.key_id, "--rate", "1/h", "--burst", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["limits"]["rate_per_s"] == pytest.approx(1 / 3600)
    # The change reaches the gateway with the first call's script (it reads the keys' generation), so that call
    # still ran under the old limits; from the next one on, the burst of one applies.
    outcomes = [caller.send("QuotePrice", pb.QuotePriceRequest(list_price_minor=1, currency="CNY")) for _ in range(3)]
    assert [o.code for o in outcomes[:2]] == [grpc.StatusCode.OK] * 2
    assert_limited(outcomes[2], "RATE_LIMITED_KEY")
    listed = json.loads(limits_stack.cli("keys", "list", "--json").stdout)
    mine = next(k for k in listed["keys"] if k["key_id"] == caller.key_id)
    assert mine["effective_limits"]["burst"] == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--rate", "fast"), "--rate must look like"),
        (("--rate", "0/s"), "--rate must be more than 0"),
        (("--burst", "-1"), "--burst must be a whole number"),
        (("--max-concurrent", "1.5"), "--max-concurrent must be a whole number"),
    ],
)
def test_bad_limits_are_refused_with_a_clear_error(limits_stack: Stack, flags: tuple[str, str], message: str) -> None:
    before = row_counts(limits_stack)["api_keys"]
    result = limits_stack.cli("keys", "create", "--name", "bad", *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert row_counts(limits_stack)["api_keys"] == before


def test_an_oversize_message_is_refused_clearly(limits_stack: Stack) -> None:
    caller = make_key(limits_stack, "oversize")
    before = row_counts(limits_stack)
    outcome = caller.send("GetBalance", pb.GetBalanceRequest(user_id="u", currency="C" * MAX_MESSAGE_BYTES))
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (outcome.code, outcome.message)
    assert str(MAX_MESSAGE_BYTES) in outcome.message, outcome.message
    assert "larger than max" in outcome.message
    assert row_counts(limits_stack) == before
    caller.ok("GetBalance", pb.GetBalanceRequest(user_id="u", currency="CNY"))  # the gateway keeps serving


# -- calls held in a worker: a wallet lock the test takes itself -------------------------------------------------


@pytest.fixture
def held_wallet(limits_stack: Stack) -> Iterator[str]:
    """A user whose CNY wallet lock is held (as a worker would hold it), so a transfer to it waits in its worker."""
    user = uid("held")
    client = redis.Redis.from_url((limits_stack.data_dir / "run" / "redis.url").read_text().strip())
    lock = f"paygate:{{account:wallet:{user}:CNY}}:lock"
    client.set(lock, "held-by-test", px=600_000)
    yield user
    client.delete(lock)
    client.close()


def waiting_transfer(caller: HostileClient, payee: str) -> pb.TransferRequest:
    payer = uid("funded")
    caller.ok("TopUp", top_up(payer))
    return pb.TransferRequest(
        transfer_id=uid("t"), from_user_id=payer, to_user_id=payee, amount_minor=1, currency="CNY"
    )


def test_a_call_without_a_deadline_gets_the_default(limits_stack: Stack, held_wallet: str) -> None:
    caller = make_key(limits_stack, "no-deadline")
    request = waiting_transfer(caller, held_wallet)
    body = request.SerializeToString()

    path = method_path("Transfer")
    try:  # no timeout at all: the gateway gives the forward its default
        caller.channel.unary_unary(path)(
            body, metadata=signing.signed_metadata(caller.key_id, caller.secret, path, body)
        )
        outcome = decode_outcome("Transfer", b"", None)
    except grpc.RpcError as error:
        outcome = decode_outcome("Transfer", None, error)
    outcome.assert_refusal_is_well_formed()
    assert outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED, (outcome.code, outcome.message)
    assert outcome.reason == "DEADLINE_EXCEEDED"
    assert f"deadline of {DEFAULT_DEADLINE_S} s" in outcome.message


def test_a_long_deadline_is_capped(limits_stack: Stack, held_wallet: str) -> None:
    caller = make_key(limits_stack, "long-deadline")
    outcome = caller.send("Transfer", waiting_transfer(caller, held_wallet), timeout_s=120)
    assert outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED, (outcome.code, outcome.message)
    assert f"deadline of {MAX_DEADLINE_S} s" in outcome.message


def test_concurrent_calls_of_a_key_are_capped_and_released_on_cancellation(
    limits_stack: Stack, held_wallet: str
) -> None:

    caller = make_key(limits_stack, "one-at-a-time", "--max-concurrent", "1")
    body = waiting_transfer(caller, held_wallet).SerializeToString()
    path = method_path("Transfer")
    held = caller.channel.unary_unary(path).future(
        body, metadata=signing.signed_metadata(caller.key_id, caller.secret, path, body), timeout=120
    )
    balance = pb.GetBalanceRequest(user_id=uid("u"), currency="CNY")

    def refused() -> Outcome | None:
        outcome = caller.send("GetBalance", balance)
        return outcome if outcome.code != grpc.StatusCode.OK else None

    outcome = wait_until(refused, attempts=200, what="a second call refused while the first is in flight")
    assert_limited(outcome, "TOO_MANY_CONCURRENT_CALLS")
    assert "maximum of 1 calls in flight" in outcome.message
    other = make_key(limits_stack, "someone-else")
    other.ok("GetBalance", balance)  # another key is not affected
    held.cancel()
    wait_until(lambda: caller.send("GetBalance", balance).code == grpc.StatusCode.OK, attempts=200, what="slot freed")


def test_last_use_is_recorded_and_listed(limits_stack: Stack) -> None:
    caller = make_key(limits_stack, "used")
    listed = json.loads(limits_stack.cli("keys", "list", "--json").stdout)
    assert next(k for k in listed["keys"] if k["key_id"] == caller.key_id)["last_used_at"] is None
    caller.ok("QuotePrice", pb.QuotePriceRequest(list_price_minor=100, currency="CNY"))

    def last_used() -> str | None:
        keys = json.loads(limits_stack.cli("keys", "list", "--json").stdout)["keys"]
        return next(k for k in keys if k["key_id"] == caller.key_id)["last_used_at"]  # type: ignore[no-any-return]

    wait_until(last_used, attempts=100, interval_s=0.1, what="last use recorded")
    text = limits_stack.cli("keys", "list").stdout
    line = next(line for line in text.splitlines() if caller.key_id in line)
    assert "last used never" not in line and "rate " in line
