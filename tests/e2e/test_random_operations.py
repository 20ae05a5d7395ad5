"""Random money operations from many client processes against a real stack, with workers killed mid-flight.

Each client process runs a seeded random mix of top-ups, wallet purchases, refunds of its own purchases and
transfers between shared wallets. Every call is retried with the same idempotency id until it gets a definitive
answer (OK, or a business refusal), exactly as a well-behaved caller would, so every operation ends either applied
once or refused. Afterwards:

- each wallet's balance equals what a model built only from the OK answers predicts;
- the ledger holds exactly the payments, refunds and transfers that were answered OK — nothing else moved money;
- `paygate ledger verify` passes.

With `kill_workers`, a killer thread SIGKILLs random workers at random moments during the run (the supervisor
restarts them); calls in flight then fail with UNAVAILABLE and their retries must neither lose nor double money.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, func, select

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.schema import payments, refunds, transfers
from tests.support import Stack, start_stack

DEFINITIVE_REFUSALS = {grpc.StatusCode.FAILED_PRECONDITION}
RETRYABLE = {grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_TRIES = 200  # per operation; with back-off this outlasts a worker restart and any expiring lease


@dataclass(frozen=True)
class Plan:
    processes: int
    operations_per_process: int
    users: int
    kills: int  # workers SIGKILLed during the run


SHORT = Plan(processes=4, operations_per_process=120, users=6, kills=2)
LONG = Plan(processes=8, operations_per_process=2_000, users=24, kills=12)


def call_until_definitive(action) -> str:  # type: ignore[no-untyped-def]
    """'ok' or 'refused'; retries the same request (same idempotency id) through crashes and contention."""
    delay = 0.01
    for _ in range(MAX_TRIES):
        try:
            action()
            return "ok"
        except grpc.RpcError as error:
            if error.code() in DEFINITIVE_REFUSALS:
                return "refused"
            if error.code() not in RETRYABLE:
                raise RuntimeError(f"{error.code()}: {error.details()}") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise RuntimeError("no definitive answer after retries")


def client_process(target: str, key_id: str, secret: str, users: list[str], seed: int, count: int) -> list[tuple]:  # type: ignore[type-arg]
    """Run `count` random operations; return the log of those answered OK."""
    rng = random.Random(seed)
    applied: list[tuple] = []  # type: ignore[type-arg]
    my_purchases: list[tuple[str, int]] = []  # (payment_id, refundable left)
    with PaygateClient(target, key_id, secret, timeout_s=15) as client:
        for i in range(count):
            op_id = f"{seed}-{i}-{uuid.uuid4().hex[:6]}"
            roll = rng.random()
            user = rng.choice(users)
            if roll < 0.25:
                amount = rng.randint(100, 5_000)
                request = pb.TopUpRequest(
                    order_id=f"t-{op_id}",
                    user_id=user,
                    amount_minor=amount,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
                if call_until_definitive(lambda r=request: client.top_up(r)) == "ok":
                    applied.append(("top_up", request.order_id, user, amount))
            elif roll < 0.65:
                amount = rng.randint(50, 1_500)
                request = pb.CreatePaymentRequest(
                    order_id=f"o-{op_id}",
                    user_id=user,
                    amount_minor=amount,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_WALLET,
                    payee_id=rng.choice(["creator-a", "creator-b", ""]),
                )
                result: list[pb.Payment] = []
                if call_until_definitive(lambda r=request, out=result: out.append(client.create_payment(r))) == "ok":
                    applied.append(("purchase", request.order_id, user, amount))
                    my_purchases.append((result[-1].payment_id, amount))
            elif roll < 0.8 and my_purchases:
                index = rng.randrange(len(my_purchases))
                payment_id, left = my_purchases[index]
                amount = rng.randint(1, left)
                request = pb.RefundPaymentRequest(payment_id=payment_id, refund_id=f"r-{op_id}", amount_minor=amount)
                refunded: list[pb.Refund] = []
                if call_until_definitive(lambda r=request, out=refunded: out.append(client.refund_payment(r))) == "ok":
                    applied.append(("refund", request.refund_id, payment_id, amount))
                    my_purchases[index] = (payment_id, left - amount)
                    if left == amount:
                        my_purchases.pop(index)
            else:
                target_user = rng.choice([u for u in users if u != user])
                amount = rng.randint(10, 800)
                request = pb.TransferRequest(
                    transfer_id=f"x-{op_id}",
                    from_user_id=user,
                    to_user_id=target_user,
                    amount_minor=amount,
                    currency="CNY",
                )
                if call_until_definitive(lambda r=request: client.transfer(r)) == "ok":
                    applied.append(("transfer", request.transfer_id, user, target_user, amount))
    return applied


def killer(stack: Stack, kills: int, stop: threading.Event, rng: random.Random, log: list[str]) -> None:
    for _ in range(kills):
        if stop.wait(rng.uniform(0.3, 1.2)):
            return
        worker = rng.choice([name for name in stack.state()["children"] if name.startswith("worker-")])
        pid = stack.worker_pid(worker)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                log.append(worker)
            except ProcessLookupError:
                pass


def run_and_check(stack: Stack, database_url: str, plan: Plan, seed: int) -> str:
    key_id, secret = stack.create_key("random-ops")
    users = [f"u{n}-{uuid.uuid4().hex[:6]}" for n in range(plan.users)]
    stop = threading.Event()
    killed: list[str] = []
    murderer = threading.Thread(target=killer, args=(stack, plan.kills, stop, random.Random(seed), killed))
    started = time.perf_counter()
    murderer.start()
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(plan.processes) as pool:
            logs = pool.starmap(
                client_process,
                [
                    (stack.listen, key_id, secret, users, seed * 1000 + n, plan.operations_per_process)
                    for n in range(plan.processes)
                ],
            )
    finally:
        stop.set()
        murderer.join()
    elapsed = time.perf_counter() - started
    applied = [entry for log in logs for entry in log]

    # The model: wallets move only by what was answered OK.
    expected = dict.fromkeys(users, 0)
    purchases_by_id: dict[str, str] = {}
    for entry in applied:
        if entry[0] == "top_up":
            expected[entry[2]] += entry[3]
        elif entry[0] == "purchase":
            expected[entry[2]] -= entry[3]
    with PaygateClient(stack.listen, key_id, secret) as client:
        for entry in applied:
            if entry[0] == "purchase":
                payment = client.get_payment(pb.GetPaymentRequest(order_id=entry[1]))
                purchases_by_id[payment.payment_id] = entry[2]
        for entry in applied:
            if entry[0] == "refund":
                expected[purchases_by_id[entry[2]]] += entry[3]
            elif entry[0] == "transfer":
                expected[entry[2]] -= entry[4]
                expected[entry[3]] += entry[4]
        for user in users:
            balance = client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor
            assert balance == expected[user], f"{user}: ledger {balance}, model {expected[user]}"
            assert balance >= 0

    # Nothing else moved money: the ledger holds exactly the operations answered OK.
    counts = {kind: sum(1 for e in applied if e[0] == kind) for kind in ("top_up", "purchase", "refund", "transfer")}
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored_payments = connection.execute(
            select(payments.c.payment_type, func.count())
            .where(payments.c.user_id.in_(users))
            .group_by(payments.c.payment_type)
        ).all()
        stored_refunds = connection.execute(
            select(func.count()).select_from(refunds).where(refunds.c.payment_id.in_(list(purchases_by_id) or [""]))
        ).scalar_one()
        stored_transfers = connection.execute(
            select(func.count()).select_from(transfers).where(transfers.c.from_user_id.in_(users))
        ).scalar_one()
    engine.dispose()
    assert dict(stored_payments) == {
        k: v for k, v in (("top_up", counts["top_up"]), ("purchase", counts["purchase"])) if v
    }
    assert stored_refunds == counts["refund"]
    assert stored_transfers == counts["transfer"]

    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    operations = plan.processes * plan.operations_per_process
    return (
        f"{operations} random operations by {plan.processes} processes on {plan.users} wallets, 3 workers, "
        f"{len(killed)} worker SIGKILLs: {len(applied)} applied ({counts}), the rest refused; "
        f"{elapsed:.1f} s; model = ledger; ledger verify OK"
    )


CRASH_ENV = {
    # Shorter leases so that locks and in-flight guards left by a killed worker expire quickly.
    "PAYGATE_LOCK_LEASE_MS": "1500",
    "PAYGATE_IDEMPOTENCY_LEASE_MS": "2000",
}


def test_random_operations_with_worker_crashes_sqlite(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "stack", workers=3, extra_env=CRASH_ENV)
    try:
        print(run_and_check(stack, f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}", SHORT, seed=7))
    finally:
        assert stack.stop() == 0


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def crash_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    if request.param == "sqlite":
        stack = start_stack(tmp_path / "stack", workers=3, extra_env=CRASH_ENV)
        url = f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}"
    else:
        url = str(request.getfixturevalue(f"{request.param}_url"))
        stack = start_stack(tmp_path / "stack", workers=3, database_url=url, extra_env=CRASH_ENV)
    yield stack, url
    assert stack.stop() == 0


@pytest.mark.stress
def test_stress_random_operations_with_worker_crashes(crash_stack: tuple[Stack, str]) -> None:
    stack, url = crash_stack
    print(f"\nstress on {url.split(':')[0]}: " + run_and_check(stack, url, LONG, seed=11))
