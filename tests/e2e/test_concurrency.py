"""Concurrent wallet purchases from several client processes against a real stack.

Whatever the interleaving: no wallet goes negative, every successful purchase is in the ledger exactly once,
every journal entry sums to zero, and every account's balance equals the sum of its postings.
"""

from __future__ import annotations

import multiprocessing
import re
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
from runtime.schema import accounts, payments, postings
from tests.support import Stack, start_stack

PRICE_MINOR = 170


@dataclass(frozen=True)
class Load:
    processes: int
    purchases_per_process: int
    users: int
    top_up_minor: int


# Demand always exceeds the money, so wallets are drained to below one price whatever the interleaving.
SHORT = Load(processes=4, purchases_per_process=40, users=3, top_up_minor=5_000)
# `make stress`: 3,200 purchases by 8 processes on 8 wallets, about half of which can succeed.
LONG = Load(processes=8, purchases_per_process=400, users=8, top_up_minor=200 * PRICE_MINOR + 99)


def buyer(
    target: str, ca_file: str | None, key_id: str, secret: str, users: list[str], seed: int, purchases: int
) -> dict[str, int]:
    """One client process: purchases spread over the shared users; returns its successes per user."""
    succeeded = dict.fromkeys(users, 0)
    with PaygateClient(target, key_id, secret, root_certificates=ca_file) as client:
        for i in range(purchases):
            user = users[(seed + i) % len(users)]
            request = pb.CreatePaymentRequest(
                order_id=f"o-{seed}-{i}-{uuid.uuid4().hex[:6]}",
                user_id=user,
                amount_minor=PRICE_MINOR,
                currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET,
                payee_id="creator-hot",
            )
            for _attempt in range(20):  # ABORTED (lock busy) is retryable with the same order id
                try:
                    client.create_payment(request)
                    succeeded[user] += 1
                    break
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        break
                    if error.code() != grpc.StatusCode.ABORTED:
                        # RpcError does not pickle across the pool: report it as text.
                        raise RuntimeError(f"{error.code()}: {error.details()}") from None
    return succeeded


def run_purchases(stack: Stack, load: Load = SHORT) -> tuple[list[str], dict[str, int]]:
    key_id, secret = stack.create_key("concurrency")
    users = [f"u-{uuid.uuid4().hex[:8]}" for _ in range(load.users)]
    with stack.client(key_id, secret) as client:
        for user in users:
            client.top_up(
                pb.TopUpRequest(
                    order_id=f"t-{user}",
                    user_id=user,
                    amount_minor=load.top_up_minor,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
            )
    context = multiprocessing.get_context("spawn")  # no gRPC state crosses into the children
    with context.Pool(load.processes) as pool:
        results = pool.starmap(
            buyer,
            [
                (stack.listen, stack.ca_file, key_id, secret, users, seed, load.purchases_per_process)
                for seed in range(load.processes)
            ],
        )
    totals = dict.fromkeys(users, 0)
    for result in results:
        for user, count in result.items():
            totals[user] += count
    return users, totals


def check_ledger(database_url: str, stack: Stack, users: list[str], totals: dict[str, int], load: Load = SHORT) -> None:
    key_id, secret = stack.create_key("checker")
    with stack.client(key_id, secret) as client:
        for user in users:
            available = client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor
            assert available >= 0
            assert available == load.top_up_minor - PRICE_MINOR * totals[user]
            # Demand exceeded supply, so each wallet was drained as far as the price allows.
            assert available < PRICE_MINOR
    verified = stack.cli("ledger", "verify")  # the operator's tool agrees
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger verify: OK" in verified.stdout
    engine = create_engine(database_url)
    with engine.connect() as connection:
        for account_id, balance in connection.execute(select(accounts.c.account_id, accounts.c.balance_minor)):
            summed = connection.execute(
                select(func.coalesce(func.sum(postings.c.amount_minor), 0)).where(postings.c.account_id == account_id)
            ).scalar_one()
            assert balance == summed, f"account {account_id}"
        unbalanced = connection.execute(
            select(postings.c.entry_id)
            .group_by(postings.c.entry_id, postings.c.currency)
            .having(func.sum(postings.c.amount_minor) != 0)
        ).all()
        assert unbalanced == []
        stored = connection.execute(
            select(func.count())
            .select_from(payments)
            .where(payments.c.user_id.in_(users), payments.c.payment_type == "purchase")
        ).scalar_one()
        assert stored == sum(totals.values())
    engine.dispose()


def test_concurrent_purchases_never_overdraw_sqlite(stack: Stack) -> None:
    users, totals = run_purchases(stack)
    check_ledger(f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}", stack, users, totals)


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
def server_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    running = start_stack(tmp_path / "stack", workers=3, database_url=url)
    yield running, url
    assert running.stop() == 0


def test_concurrent_purchases_never_overdraw_on_database_servers(server_stack: tuple[Stack, str]) -> None:
    stack, url = server_stack
    users, totals = run_purchases(stack)
    check_ledger(url, stack, users, totals)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def any_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    if request.param == "sqlite":
        running = start_stack(tmp_path / "stack", workers=3)
        url = f"sqlite:///{running.data_dir / 'paygate.sqlite3'}"
    else:
        url = str(request.getfixturevalue(f"{request.param}_url"))
        running = start_stack(tmp_path / "stack", workers=3, database_url=url)
    yield running, url
    assert running.stop() == 0


@pytest.mark.stress
def test_stress_concurrent_purchases(any_stack: tuple[Stack, str]) -> None:
    stack, url = any_stack
    started = time.perf_counter()
    users, totals = run_purchases(stack, LONG)
    elapsed = time.perf_counter() - started
    check_ledger(url, stack, users, totals, LONG)
    retries = re.findall(r'paygate_ledger_retries_total\{reason="(\w+)"\} (\d+)', stack.metrics_text())
    attempts = LONG.processes * LONG.purchases_per_process
    print(  # the figures docs/correctness.md records (run with -s to see them)
        f"\nstress on {url.split(':')[0]}: {attempts} purchases by {LONG.processes} processes on {LONG.users} wallets, "
        f"3 workers: {sum(totals.values())} succeeded, the rest refused for funds; {elapsed:.1f} s; "
        f"ledger retries {dict(retries) or 'none'}; ledger consistent"
    )


HOT_BUYERS = 1_000
HOT_PRICE_MINOR = 4_990


def hot_buyers(
    target: str, ca_file: str | None, key_id: str, secret: str, buyers: list[tuple[str, str]]
) -> tuple[float, float, int]:
    """Each (user, creator): top up, then buy once; returns (first purchase start, last purchase end, OK count)."""
    with PaygateClient(target, key_id, secret, root_certificates=ca_file) as client:
        for user, _ in buyers:
            client.top_up(
                pb.TopUpRequest(
                    order_id=f"t-{user}",
                    user_id=user,
                    amount_minor=HOT_PRICE_MINOR,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
            )
        started = time.time()
        done = 0
        for user, creator in buyers:
            request = pb.CreatePaymentRequest(
                order_id=f"o-{user}",
                user_id=user,
                amount_minor=HOT_PRICE_MINOR,
                currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET,
                payee_id=creator,
            )
            for _ in range(50):
                try:
                    client.create_payment(request)
                    done += 1
                    break
                except grpc.RpcError as error:
                    if error.code() not in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE):
                        raise RuntimeError(f"{error.code()}: {error.details()}") from None
        return started, time.time(), done


def run_hot(stack: Stack, creators: list[str], processes: int = 8) -> tuple[float, int]:
    key_id, secret = stack.create_key("hot")
    run = uuid.uuid4().hex[:6]
    buyers = [(f"h{run}-{n}", creators[n % len(creators)]) for n in range(HOT_BUYERS)]
    shards = [buyers[n::processes] for n in range(processes)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = pool.starmap(hot_buyers, [(stack.listen, stack.ca_file, key_id, secret, shard) for shard in shards])
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    return sum(r[2] for r in results) / elapsed, sum(r[2] for r in results)


@pytest.mark.stress
def test_stress_hot_account_loses_no_credit(any_stack: tuple[Stack, str]) -> None:
    stack, url = any_stack
    engine = create_engine(url)

    def payable(creator: str) -> int:
        with engine.connect() as connection:
            value = connection.execute(
                select(accounts.c.balance_minor).where(accounts.c.kind == "payable", accounts.c.subject == creator)
            ).scalar_one_or_none()
        return int(value or 0)

    hot_creator = f"creator-hot-{uuid.uuid4().hex[:6]}"
    hot_rate, hot_done = run_hot(stack, [hot_creator])
    assert hot_done == HOT_BUYERS
    share = HOT_PRICE_MINOR - HOT_PRICE_MINOR * 2000 // 10_000  # default 20 % platform fee
    assert payable(hot_creator) == HOT_BUYERS * share  # every credit to the one hot account landed

    spread = [f"creator-{n}-{uuid.uuid4().hex[:6]}" for n in range(HOT_BUYERS)]
    spread_rate, spread_done = run_hot(stack, spread)
    assert spread_done == HOT_BUYERS
    assert sum(payable(c) for c in spread[:50]) == 50 * share
    engine.dispose()
    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout
    print(
        f"\nhot account on {url.split(':')[0]}: {HOT_BUYERS} concurrent purchases by 8 processes, one creator: "
        f"{hot_rate:.0f} purchases/s; {HOT_BUYERS} distinct creators: {spread_rate:.0f} purchases/s; "
        "no credit lost; ledger verify OK"
    )
