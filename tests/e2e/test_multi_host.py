"""Workers on other hosts (docs/architecture.md, "Workers on other hosts"): the gateway and two worker hosts, each
its own network namespace joined by veth pairs to a bridge (tests/hosts.py; distinct 127.0.0.x addresses where
namespaces cannot be made), under a load of wallet purchases from several concurrent callers.

Mid-load, worker host 1 is cut off in two steps: first its answers to the gateway are dropped (requests still
arrive, so calls commit on it and their answers are lost), then its link goes down. The gateway must eject it —
`paygate_worker_healthy` 0 and every later call served by worker host 2 — and take it back once the link returns.
A call in flight to the cut host ends with DEADLINE_EXCEEDED for its caller, who retries with the same order id:
when the first attempt had committed, the retry returns that payment and nothing is paid twice. At the end the
callers' model of what succeeded must equal the ledger, and `paygate ledger verify` must pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.schema import journal_entries, payments
from tests.e2e.multi_host_deployment import Deployment, deploy
from tests.hosts import Network, make_network
from tests.support import wait_until

log = logging.getLogger(__name__)

WORKER_HOSTS = ["worker-1", "worker-2"]
CALLERS = 4
PRICE_MINOR = 170
MAX_PURCHASES_PER_CALLER = 2_000  # a bound; the test stops the callers long before
TOP_UP_MINOR = PRICE_MINOR * MAX_PURCHASES_PER_CALLER  # money never runs out: every purchase must succeed
CALL_DEADLINE_S = 2.0  # what a caller waits for one attempt
MAX_ATTEMPTS = 60  # per purchase, same order id each time
RETRY_PAUSE_S = 0.1
# Answers a caller retries with the same order id: the gateway could not deliver, or the call may or may not have
# been applied (docs/errors.md), or the first call with the same id is still in flight.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
AMBIGUOUS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class Purchase:
    """One order as its caller saw it."""

    order_id: str
    user: str
    started_s: float  # time.monotonic() when its first attempt was sent
    payment_id: str
    worker: str  # the worker host that gave the final OK
    first_failure: grpc.StatusCode | None  # the first attempt's ambiguous answer, if it had one
    committed_before_retry: bool | None  # for those: was the order already in the ledger when the caller retried?


@dataclass
class Load:
    deployment: Deployment
    key_id: str
    secret: str
    engine: Engine
    stop: threading.Event = field(default_factory=threading.Event)
    purchases: list[Purchase] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Purchase]:
        with self.lock:
            return list(self.purchases)

    def served_since(self, since_s: float) -> set[str]:
        return {p.worker for p in self.snapshot() if p.started_s >= since_s}

    def ambiguous(self) -> list[Purchase]:
        return [p for p in self.snapshot() if p.first_failure is not None]


def order_committed(engine: Engine, order_id: str) -> bool:
    with engine.connect() as connection:
        found = connection.execute(select(payments.c.payment_id).where(payments.c.order_id == order_id)).first()
    return found is not None


def purchase(load: Load, client: PaygateClient, user: str, order_id: str) -> Purchase:
    request = pb.CreatePaymentRequest(
        order_id=order_id,
        user_id=user,
        amount_minor=PRICE_MINOR,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        payee_id="creator-multi-host",
    )
    started_s = time.monotonic()
    first_failure: grpc.StatusCode | None = None
    committed: bool | None = None
    for _attempt in range(MAX_ATTEMPTS):
        try:
            result = client.call("CreatePayment", request, pb.Payment, timeout_s=CALL_DEADLINE_S)
        except grpc.RpcError as error:
            code = error.code()
            if code not in RETRYABLE:
                raise AssertionError(f"{order_id}: {code} {error.details()}") from None
            if first_failure is None and code in AMBIGUOUS:
                first_failure = code
                committed = order_committed(load.engine, order_id)
            time.sleep(RETRY_PAUSE_S)
            continue
        payment = result.response
        assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED, payment
        return Purchase(order_id, user, started_s, payment.payment_id, str(result.worker), first_failure, committed)
    raise AssertionError(f"{order_id}: no definite answer after {MAX_ATTEMPTS} attempts")


def caller(load: Load, user: str) -> None:
    try:
        with load.deployment.client(load.key_id, load.secret) as client:
            for number in range(MAX_PURCHASES_PER_CALLER):
                if load.stop.is_set():
                    return
                done = purchase(load, client, user, f"{user}-{number}")
                with load.lock:
                    load.purchases.append(done)
    except BaseException as error:  # reported by the test, not lost in a thread
        load.failures.append(f"{user}: {error!r}")


@pytest.fixture
def network() -> Iterator[Network]:
    hosts = make_network(["gateway", *WORKER_HOSTS])
    try:
        yield hosts
    finally:
        hosts.close()  # every process, namespace and link, whatever happened


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.stress])],
)
def deployment(request: pytest.FixtureRequest, network: Network, tmp_path: Path) -> Deployment:
    """SQLite (the shared file) in `make test`; PostgreSQL through a forwarder in `make stress` when configured."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'paygate.sqlite3'}"
    else:
        database_url = str(request.getfixturevalue("postgres_url"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    return deploy(network, tmp_path, WORKER_HOSTS, base_env, database_url)


def top_up(deployment: Deployment, key_id: str, secret: str, users: list[str]) -> None:
    with deployment.client(key_id, secret) as client:
        for user in users:
            request = pb.TopUpRequest(
                order_id=f"t-{user}",
                user_id=user,
                amount_minor=TOP_UP_MINOR,
                currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX,
            )
            client.top_up(request)


def wait_for_calls(load: Load, since_s: float, workers: set[str], what: str, count: int = 1) -> None:
    """Until calls begun after `since_s` have succeeded on each of `workers` (and `count` in all)."""

    def done() -> bool:
        assert not load.failures, load.failures
        fresh = [p for p in load.snapshot() if p.started_s >= since_s]
        return len(fresh) >= count and workers <= {p.worker for p in fresh}

    wait_until(done, attempts=1_200, what=what)


def test_a_worker_host_cut_off_mid_load_is_ejected_loses_no_money_and_rejoins(deployment: Deployment) -> None:
    network = deployment.network
    cut_host = network.hosts["worker-1"]
    key_id, secret = deployment.create_key("multi-host")
    users = [f"mh-{n}-{os.getpid()}" for n in range(CALLERS)]
    top_up(deployment, key_id, secret, users)
    engine = create_engine(deployment.database_url)
    load = Load(deployment, key_id, secret, engine)
    threads = [threading.Thread(target=caller, args=(load, user), name=f"caller-{user}", daemon=True) for user in users]
    for thread in threads:
        thread.start()
    try:
        wait_for_calls(load, 0.0, set(WORKER_HOSTS), "calls served by both worker hosts", count=20)
        cut_at_s = cut_off(deployment, load)
        ejected_at_s = time.monotonic()
        wait_for_calls(load, ejected_at_s, {"worker-2"}, "calls served after the ejection", count=20)
        assert load.served_since(ejected_at_s) == {"worker-2"}, "a call went to the ejected host"
        assert deployment.worker_health()["worker-1"] == 0.0

        network.restore(cut_host)
        restored_at_s = time.monotonic()
        wait_until(lambda: deployment.worker_health()["worker-1"] == 1.0, attempts=1_200, what="worker-1 healthy again")
        healthy_at_s = time.monotonic()
        wait_for_calls(load, restored_at_s, set(WORKER_HOSTS), "both worker hosts serving after the return")
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(MAX_ATTEMPTS * (CALL_DEADLINE_S + RETRY_PAUSE_S))
    assert not load.failures, load.failures
    report(load, ejected_at_s - cut_at_s, healthy_at_s - restored_at_s)
    check_model_equals_ledger(deployment, load, key_id, secret, users)
    engine.dispose()


def cut_off(deployment: Deployment, load: Load) -> float:
    """Cut worker host 1 off mid-load; returns when the gateway has ejected it (as its /metrics say)."""
    network = deployment.network
    cut_host = network.hosts["worker-1"]
    cut_at_s = time.monotonic()
    if network.namespaces:
        # Step 1: its answers to the gateway are lost, requests still reach it (a one-way partition). Calls
        # routed to it before the ejection commit there and their callers see DEADLINE_EXCEEDED.
        network.drop_replies_to(cut_host, network.hosts["gateway"].address)
        wait_until(load.ambiguous, attempts=1_200, what="a call left without its answer")
    # Step 2 (loopback: the only step): the link goes down, or the host's processes stop.
    network.cut(cut_host, deployment.holds_no_database_lock)
    wait_until(lambda: deployment.worker_health()["worker-1"] == 0.0, attempts=1_200, what="worker-1 ejected")
    return cut_at_s


def report(load: Load, ejection_s: float, rejoin_s: float) -> None:
    """The figures docs/architecture.md quotes (seen with `-o log_cli=true`); measured, never asserted."""
    purchases = load.snapshot()
    ambiguous = load.ambiguous()
    committed = [p for p in ambiguous if p.committed_before_retry]
    log.warning(
        "multi-host (%s): %d purchases; %d with an ambiguous first attempt (%s), %d of them committed on the cut "
        "host before the retry; ejected %.1f s after the cut began, healthy %.1f s after the link returned",
        load.deployment.network.mode,
        len(purchases),
        len(ambiguous),
        ", ".join(sorted({p.first_failure.name for p in ambiguous if p.first_failure})) or "none",
        len(committed),
        ejection_s,
        rejoin_s,
    )


def check_model_equals_ledger(deployment: Deployment, load: Load, key_id: str, secret: str, users: list[str]) -> None:
    purchases = load.snapshot()
    ambiguous = load.ambiguous()
    assert {p.first_failure for p in ambiguous} <= AMBIGUOUS
    if deployment.network.namespaces:
        # The one-way partition guarantees calls that committed on the cut host without their caller knowing.
        assert any(p.committed_before_retry for p in ambiguous), ambiguous
    with load.engine.connect() as connection:
        stored = dict(
            connection.execute(
                select(payments.c.order_id, payments.c.payment_id).where(
                    payments.c.user_id.in_(users), payments.c.payment_type == "purchase"
                )
            ).all()
        )
        entries = connection.execute(
            select(func.count())
            .select_from(journal_entries)
            .where(journal_entries.c.entry_id.in_(select(payments.c.entry_id).where(payments.c.user_id.in_(users))))
        ).scalar_one()
    # Every order the callers saw succeed is in the ledger once, under the payment id its caller got — the retry
    # of a call that had committed on the cut host got the original payment back — and nothing else is.
    assert stored == {p.order_id: p.payment_id for p in purchases}
    assert entries == len(purchases) + len(users)  # one entry per purchase and per top-up
    with deployment.client(key_id, secret) as client:
        for user in users:
            bought = sum(1 for p in purchases if p.user == user)
            balance = client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY"))
            assert balance.available_minor == TOP_UP_MINOR - PRICE_MINOR * bought, user
    verified = deployment.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger verify: OK" in verified.stdout
