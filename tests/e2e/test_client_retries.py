"""The sync client's retries and typed errors through a real `paygate serve` (docs/client.md).

Every case asserts what happened and in which order — the attempts, the codes retried, the delays the server
asked for — and that money moved exactly once; never how long anything took.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from paygate import errors
from paygate.client import PaygateClient
from paygate.retry import NO_RETRY, RetryEvent, RetryPolicy
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import REPO_ROOT, Stack, free_port, start_stack, wait_until

# Patient enough to outlast a gateway restart, bounded all the same (attempts and the call's deadline).
PATIENT = RetryPolicy(max_attempts=400, initial_backoff_s=0.05, max_backoff_s=0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        Path(tmp_path_factory.mktemp("client-retries")),
        workers=2,
        # A wallet lock the test holds keeps a call in flight in its worker until the test lets go.
        extra_env={"PAYGATE_LOCK_WAIT_MS": "60000"},
    )
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


@pytest.fixture(scope="module")
def key(stack: Stack) -> tuple[str, str]:
    return stack.create_key("client-retries")


class Retries:
    """The client's `on_retry` observer: every retry in the order the client made them."""

    def __init__(self) -> None:
        self.events: list[RetryEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: RetryEvent) -> None:
        with self._lock:
            self.events.append(event)

    def codes(self) -> set[grpc.StatusCode]:
        with self._lock:
            return {event.error.code() for event in self.events}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def top_up(user: str, amount_minor: int = 10_000) -> pb.TopUpRequest:
    return pb.TopUpRequest(
        order_id=uid("top"), user_id=user, amount_minor=amount_minor, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    )


def purchase(user: str, order_id: str, amount_minor: int = 100) -> pb.CreatePaymentRequest:
    return pb.CreatePaymentRequest(
        order_id=order_id,
        user_id=user,
        amount_minor=amount_minor,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        payee_id="creator-retries",
    )


def balance(client: PaygateClient, user: str) -> int:
    return int(client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor)


def payments_of(stack: Stack, user: str) -> int:
    import sqlite3  # noqa: PLC0415

    connection = sqlite3.connect(f"file:{stack.data_dir / 'paygate.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM payments WHERE user_id = ?", (user,)).fetchone()[0])
    finally:
        connection.close()


class Background:
    """A call run on a thread, its answer or its error kept for the test."""

    def __init__(self, work: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Any) -> None:
        try:
            self.result = work()
        except BaseException as error:
            self.error = error

    def join(self) -> Any:
        self._thread.join(timeout=180)
        assert not self._thread.is_alive(), "the call never ended"
        if self.error is not None:
            raise self.error
        return self.result


@contextmanager
def extra_gateway(stack: Stack, run_dir: Path, listen: str) -> Iterator[None]:
    """Another `paygate gateway` in front of the stack's workers, listening on `listen`."""
    workers = [c["address"] for name, c in stack.state()["children"].items() if name.startswith("worker-")]
    env = dict(stack.env)
    env["PAYGATE_DATABASE_URL"] = f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}"
    env["PAYGATE_REDIS_URL"] = (stack.data_dir / "run" / "redis.url").read_text().strip()
    env["PAYGATE_MASTER_KEY"] = (stack.data_dir / "master.key").read_text().strip()
    env.update(stack.gateway_tls_env())
    (run_dir / "run").mkdir(parents=True)
    argv = [sys.executable, "-m", "stack", "gateway", "--listen", listen, "--data-dir", str(run_dir)]
    with (run_dir / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [*argv, "--worker-addresses", ",".join(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (run_dir / "gateway.log").read_text()[-4000:]


# -- UNAVAILABLE: the gateway is not there (yet, or for a moment) -------------------------------------------------


def test_a_call_made_before_the_gateway_listens_goes_through_once_it_does(
    stack: Stack, key: tuple[str, str], tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    retries = Retries()
    user = uid("early")
    client = PaygateClient(
        listen, *key, credentials=stack.channel_credentials(), retry=PATIENT, timeout_s=120, on_retry=retries
    )
    with client:
        call = Background(lambda: client.call("TopUp", top_up(user), pb.Payment))
        # Nothing listens yet: the client is retrying UNAVAILABLE ...
        wait_until(lambda: len(retries.events) >= 2, attempts=600, what="the client retrying a closed port")
        with extra_gateway(stack, tmp_path / "late-gateway", listen):
            result = call.join()  # ... and the call goes through once a gateway listens there.
            assert balance(client, user) == 10_000
    waits = [round(e.delay_s, 3) for e in retries.events]
    print(f"before the gateway listened: {result.attempts} attempts, waits {waits}")
    assert result.response.status == pb.PAYMENT_STATUS_SUCCEEDED and result.worker.startswith("worker-")
    assert result.attempts == len(retries.events) + 1
    assert [event.attempt for event in retries.events] == list(range(1, result.attempts))
    assert retries.codes() == {grpc.StatusCode.UNAVAILABLE}
    assert all(0 <= e.delay_s <= PATIENT.backoff_cap_s(e.attempt) and not e.from_retry_info for e in retries.events)


def test_purchases_ride_through_a_gateway_restart_and_each_moves_money_once(stack: Stack, key: tuple[str, str]) -> None:
    retries = Retries()
    user, purchases = uid("restart"), 40
    with stack.client(*key, retry=PATIENT, timeout_s=120, on_retry=retries) as client:
        client.top_up(top_up(user))
        done: list[pb.Payment] = []
        order_ids = [uid("o") for _ in range(purchases)]

        def buy_all() -> None:
            done.extend(client.create_payment(purchase(user, order_id)) for order_id in order_ids)

        buying = Background(buy_all)
        wait_until(lambda: len(done) >= 5, attempts=1200, what="the first purchases")
        os.kill(stack.state()["children"]["gateway"]["pid"], signal.SIGKILL)
        buying.join()
        print(f"gateway restart: {len(retries.events)} retries, codes {sorted(c.name for c in retries.codes())}")
        assert grpc.StatusCode.UNAVAILABLE in retries.codes()  # the restart was met, and ridden through
        assert [p.order_id for p in done] == order_ids
        assert all(p.status == pb.PAYMENT_STATUS_SUCCEEDED for p in done)
        assert len({p.payment_id for p in done}) == purchases
        assert balance(client, user) == 10_000 - 100 * purchases
        # The same order id again, through the client's own path: the original payment, nothing moved.
        again = client.create_payment(purchase(user, order_ids[3]))
        assert again.payment_id == done[3].payment_id and balance(client, user) == 10_000 - 100 * purchases
    assert payments_of(stack, user) == purchases + 1  # the top-up and one row per order id
    verify = stack.cli("ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


# -- ABORTED: the same idempotency key still in flight --------------------------------------------------------------


@pytest.fixture
def held_wallet(stack: Stack) -> Iterator[tuple[str, redis.Redis]]:
    """A user whose CNY wallet lock is held (as a worker would hold it): a transfer to it waits in its worker."""
    user = uid("held")
    store = redis.Redis.from_url((stack.data_dir / "run" / "redis.url").read_text().strip())
    lock = f"paygate:{{account:wallet:{user}:CNY}}:lock"
    store.set(lock, "held-by-test", px=600_000)
    yield user, store
    store.delete(lock)
    store.close()


def test_aborted_is_retried_after_its_retry_info_until_the_first_call_answers(
    stack: Stack, key: tuple[str, str], held_wallet: tuple[str, redis.Redis]
) -> None:
    payee, store = held_wallet
    payer, retries = uid("payer"), Retries()
    transfer = pb.TransferRequest(
        transfer_id=uid("t"), from_user_id=payer, to_user_id=payee, amount_minor=250, currency="CNY"
    )
    with (
        stack.client(*key, retry=NO_RETRY, timeout_s=60) as first,
        stack.client(*key, retry=PATIENT, timeout_s=60, on_retry=retries) as second,
    ):
        first.top_up(top_up(payer, 1_000))
        held = Background(lambda: first.transfer(transfer))
        guard = f"*inflight*{transfer.transfer_id}*"
        wait_until(lambda: list(store.scan_iter(match=guard)), attempts=600, what="the first transfer in flight")
        retried = Background(lambda: second.call("Transfer", transfer, pb.Transfer))
        wait_until(lambda: grpc.StatusCode.ABORTED in retries.codes(), attempts=600, what="an ABORTED retried")
        store.delete(f"paygate:{{account:wallet:{payee}:CNY}}:lock")
        original, result = held.join(), retried.join()
        assert result.response.entry_id == original.entry_id and result.response.transfer_id == transfer.transfer_id
        assert balance(first, payer) == 750 and balance(first, payee) == 250  # moved once
    print(f"ABORTED: {result.attempts} attempts, RetryInfo waits {[e.delay_s for e in retries.events]}")
    assert result.attempts == len(retries.events) + 1 >= 2
    for event in retries.events:
        assert event.error.code() == grpc.StatusCode.ABORTED and event.error.reason == "REQUEST_IN_FLIGHT"
        assert event.from_retry_info and event.delay_s == event.error.retry_delay_s


# -- RESOURCE_EXHAUSTED with RetryInfo: a rate-limited key ------------------------------------------------------


def make_limited_key(stack: Stack, name: str, rate: str) -> tuple[str, str]:
    import json  # noqa: PLC0415

    result = stack.cli("keys", "create", "--name", name, "--json", "--rate", rate, "--burst", "1")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return created["key_id"], created["secret"]


def test_a_rate_limited_call_waits_the_delay_the_gateway_names_then_goes_through(stack: Stack) -> None:
    retries = Retries()
    quote = pb.QuotePriceRequest(list_price_minor=100, currency="CNY")
    with stack.client(*make_limited_key(stack, "one-per-second", "1/s"), on_retry=retries) as client:
        client.quote_price(quote)  # the bucket's one token
        result = client.call("QuotePrice", quote, pb.PriceQuote)
    print(f"rate limited: {result.attempts} attempts, RetryInfo waits {[e.delay_s for e in retries.events]}")
    assert result.response.amount_minor == 100 and result.attempts == len(retries.events) + 1 >= 2
    for event in retries.events:
        assert isinstance(event.error, errors.RateLimited) and event.error.reason == "RATE_LIMITED_KEY"
        assert event.from_retry_info and event.delay_s == event.error.retry_delay_s


def test_a_rate_limit_longer_than_the_deadline_is_raised_at_once(stack: Stack) -> None:
    retries = Retries()
    quote = pb.QuotePriceRequest(list_price_minor=100, currency="CNY")
    with stack.client(*make_limited_key(stack, "one-per-minute", "1/min"), on_retry=retries) as client:
        client.quote_price(quote)
        with pytest.raises(errors.RateLimited) as limited:
            client.quote_price(quote, timeout_s=5)
    assert retries.events == [] and limited.value.attempts == 1
    assert limited.value.retry_delay_s is not None and limited.value.retry_delay_s > 5
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # still what grpc.RpcError callers read


# -- typed refusals, never retried ---------------------------------------------------------------------------------


def test_a_bad_request_is_an_invalid_argument_naming_every_field_and_is_not_retried(
    stack: Stack, key: tuple[str, str]
) -> None:
    retries = Retries()
    bad = pb.TopUpRequest(
        order_id="bad id!", user_id="", amount_minor=-5, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    )
    with stack.client(*key, on_retry=retries) as client, pytest.raises(errors.InvalidArgument) as refused:
        client.top_up(bad)
    error = refused.value
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"order_id", "user_id", "amount_minor"} <= set(error.violations_by_field())
    assert (error.reason, error.domain, error.attempts, retries.events) == ("INVALID_ARGUMENT", "paygate.v1", 1, [])
    assert error.request_id and error.worker and error.worker.startswith("worker-")


def test_each_class_of_refusal_has_its_type(stack: Stack, key: tuple[str, str]) -> None:
    user = uid("typed")
    with stack.client(*key) as client:
        client.top_up(top_up(user, 100))
        with pytest.raises(errors.NotFound):
            client.get_payment(pb.GetPaymentRequest(order_id=uid("missing")))
        with pytest.raises(errors.FailedPrecondition) as poor:
            client.create_payment(purchase(user, uid("o"), amount_minor=1_000))
        assert poor.value.reason == "INSUFFICIENT_FUNDS"
        order_id = uid("o")
        client.create_payment(purchase(user, order_id, amount_minor=10))
        with pytest.raises(errors.AlreadyExists) as reused:
            client.create_payment(purchase(user, order_id, amount_minor=20))
        assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    with stack.client(key[0], "not-the-secret") as forged, pytest.raises(errors.Unauthenticated):
        forged.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY"))
    with stack.client(*stack.create_key("reader", "balances:read")) as reader, pytest.raises(errors.PermissionDenied):
        reader.top_up(top_up(user))
