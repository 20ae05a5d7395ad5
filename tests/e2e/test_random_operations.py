"""Random money operations from many client processes against a real stack, with workers killed mid-flight.

The stack runs its channels (the provider simulator and the notification edge) with a quick janitor. Each client
process runs a seeded random mix of top-ups, wallet purchases, refunds of its own purchases and transfers between
shared wallets, and — for a share of its operations — top-ups and purchases through a random provider channel
(Alipay, WeChat Pay, UnionPay, card with good and declined cards) and refunds, partial or full, of the channel
payments it made. The simulator misbehaves meanwhile: Alipay's callbacks come twice and out of order, WeChat
Pay's are forged for the first part of the run, UnionPay's never come (only the janitor's query settles those),
and two provider calls at a time answer 5xx (the adapter retries them). Every call is retried with the same
idempotency id until it gets a definitive answer (OK, or a business refusal), exactly as a well-behaved caller
would, so every operation ends either applied once or refused. Afterwards:

- every channel payment settles (no PENDING left after a bounded wait) as the simulator decided: paid, or FAILED
  for a declined card; every channel refund, replayed, settles too;
- each wallet's balance equals what a model built only from the OK answers predicts: a channel top-up credits
  the wallet once SUCCEEDED, a refund of a channel top-up debits it when accepted (and gives it back only if the
  provider refused it), channel purchases and their refunds never touch a wallet; each creator's payable equals
  its purchases' shares less its refunds' shares;
- the ledger holds exactly the payments, refunds and transfers that were answered OK — nothing else moved money;
  each payment's refunded total is the sum of its accepted refunds, and the simulator refunded exactly as much;
- `paygate ledger verify` passes (it also checks each channel's IN_TRANSIT account against pending refunds).

With `kills`, a killer thread SIGKILLs random workers at random moments during the run (the supervisor restarts
them); calls in flight then fail with UNAVAILABLE and their retries must neither lose nor double money.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from sqlalchemy import create_engine, func, select

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.schema import accounts, channel_notifications, payments, refunds, transfers
from tests.e2e.channel_support import DECLINE_CARDS, SUCCESS_CARD, Simulator
from tests.support import Stack, start_stack

DEFINITIVE_REFUSALS = {grpc.StatusCode.FAILED_PRECONDITION}
RETRYABLE = {grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_TRIES = 200  # per operation; with back-off this outlasts a worker restart and any expiring lease
POLL_S = 0.25  # between two looks at what is still PENDING

CHANNELS = {
    "alipay": (pb.PAYMENT_METHOD_ALIPAY, pb.PAYMENT_SCENE_UNSPECIFIED),
    "wechatpay": (pb.PAYMENT_METHOD_WECHAT_PAY, pb.PAYMENT_SCENE_UNSPECIFIED),
    "unionpay": (pb.PAYMENT_METHOD_UNIONPAY, pb.PAYMENT_SCENE_IN_APP),
    "card": (pb.PAYMENT_METHOD_CARD, pb.PAYMENT_SCENE_UNSPECIFIED),
}
PAID = {pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, pb.PAYMENT_STATUS_REFUNDED}
REFUNDABLE = {pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED}
# The simulator's misbehaviour before the run, and what replaces it midway (channels not named stay as they are).
MISBEHAVIOUR_FIRST = {
    "alipay": {"callback": ["duplicate", "out_of_order"]},
    "wechatpay": {"callback": ["forged"], "http_5xx": 2},
    "unionpay": {"callback": ["never"]},
    "card": {},
}
MISBEHAVIOUR_MIDWAY = {
    "alipay": {"callback": ["duplicate", "out_of_order"], "http_5xx": 2},
    "wechatpay": {"callback": ["duplicate", "delay_ms=300"]},
}

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    processes: int
    operations_per_process: int
    users: int
    kills: int  # workers SIGKILLed during the run
    channel_share: float  # of each process's operations, the share that goes through a provider channel
    refunds_after: int  # channel payments each process refunds after its random operations, once they settle
    midway_s: float  # when the simulator's misbehaviour changes
    settle_polls: int  # bound on the waits for channel payments and refunds to settle (POLL_S apart)


SHORT = Plan(4, 120, 6, kills=2, channel_share=0.06, refunds_after=2, midway_s=2.0, settle_polls=400)
LONG = Plan(8, 2_000, 24, kills=12, channel_share=0.2, refunds_after=10, midway_s=30.0, settle_polls=1_200)


@dataclass(frozen=True)
class Setup:
    """What every client process needs (picklable)."""

    target: str
    key_id: str
    secret: str
    users: list[str]
    creators: list[str]
    sim: Simulator
    plan: Plan


@dataclass
class ChannelPayment:
    """A channel payment a client made and may refund: how much it believes is left to refund."""

    payment_id: str
    kind: str  # "top_up" | "purchase"
    left: int


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


def definitive(action: Callable[[], T]) -> T | None:
    """The answer of `action` retried until definitive, or None when refused."""
    answers: list[T] = []
    if call_until_definitive(lambda: answers.append(action())) == "ok":
        return answers[-1]
    return None


def wallet_operation(  # type: ignore[type-arg]
    client: PaygateClient, rng: random.Random, setup: Setup, op_id: str, my_purchases: list[tuple[str, int]]
) -> tuple | None:
    """One of the original mix: a sandbox top-up, a wallet purchase, a refund of one, or a transfer."""
    roll = rng.random()
    user = rng.choice(setup.users)
    if roll < 0.25:
        amount = rng.randint(100, 5_000)
        request = pb.TopUpRequest(
            order_id=f"t-{op_id}", user_id=user, amount_minor=amount, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
        if call_until_definitive(lambda r=request: client.top_up(r)) == "ok":
            return ("top_up", request.order_id, user, amount)
    elif roll < 0.65:
        amount = rng.randint(50, 1_500)
        request = pb.CreatePaymentRequest(
            order_id=f"o-{op_id}",
            user_id=user,
            amount_minor=amount,
            currency="CNY",
            method=pb.PAYMENT_METHOD_WALLET,
            payee_id=rng.choice([*setup.creators, ""]),
        )
        payment = definitive(lambda r=request: client.create_payment(r))
        if payment is not None:
            my_purchases.append((payment.payment_id, amount))
            return ("purchase", request.order_id, user, amount)
    elif roll < 0.8 and my_purchases:
        index = rng.randrange(len(my_purchases))
        payment_id, left = my_purchases[index]
        amount = rng.randint(1, left)
        request = pb.RefundPaymentRequest(payment_id=payment_id, refund_id=f"r-{op_id}", amount_minor=amount)
        refund = definitive(lambda r=request: client.refund_payment(r))
        if refund is not None:
            my_purchases[index] = (payment_id, left - amount)
            if left == amount:
                my_purchases.pop(index)
            return ("refund", request.refund_id, payment_id, amount, refund.creator_amount_minor)
    else:
        target_user = rng.choice([u for u in setup.users if u != user])
        amount = rng.randint(10, 800)
        request = pb.TransferRequest(
            transfer_id=f"x-{op_id}", from_user_id=user, to_user_id=target_user, amount_minor=amount, currency="CNY"
        )
        if call_until_definitive(lambda r=request: client.transfer(r)) == "ok":
            return ("transfer", request.transfer_id, user, target_user, amount)
    return None


def channel_payment(client: PaygateClient, rng: random.Random, setup: Setup, op_id: str) -> tuple | None:  # type: ignore[type-arg]
    """A top-up or a purchase through a random provider channel; a fifth of the card payments are declined."""
    user = rng.choice(setup.users)
    channel = rng.choice(sorted(CHANNELS))
    method, scene = CHANNELS[channel]
    declined, card_token = False, ""
    if channel == "card":
        declined = rng.random() < 0.2
        card_token = setup.sim.card_token(rng.choice(sorted(DECLINE_CARDS.values())) if declined else SUCCESS_CARD)
    if rng.random() < 0.5:
        kind, amount = "top_up", rng.randint(100, 5_000)
        request: Any = pb.TopUpRequest(
            order_id=f"ct-{op_id}", user_id=user, amount_minor=amount, currency="CNY", method=method, scene=scene
        )
        send: Callable[..., pb.Payment] = client.top_up
    else:
        kind, amount = "purchase", rng.randint(50, 1_500)
        request = pb.CreatePaymentRequest(
            order_id=f"co-{op_id}",
            user_id=user,
            amount_minor=amount,
            currency="CNY",
            method=method,
            scene=scene,
            payee_id=rng.choice([*setup.creators, ""]),
            description="A course paid through a channel",
        )
        send = client.create_payment
    request.card_token = card_token
    payment = definitive(lambda: send(request, request_id=f"rq-{request.order_id}"))
    if payment is None:
        return None
    # What the payer needs (PENDING), or the card's verdict at once; a retry may already see it SUCCEEDED.
    assert payment.status in (pb.PAYMENT_STATUS_PENDING, pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_FAILED)
    return (f"channel_{kind}", request.order_id, user, amount, channel, payment.payment_id, payment.attempt_id, declined)


def channel_refund(client: PaygateClient, rng: random.Random, op_id: str, target: ChannelPayment) -> tuple | None:  # type: ignore[type-arg]
    """A refund, partial or "the rest" (amount 0), of one of this client's channel payments."""
    requested = 0 if rng.random() < 0.3 else rng.randint(1, target.left)
    request = pb.RefundPaymentRequest(payment_id=target.payment_id, refund_id=f"cr-{op_id}", amount_minor=requested)
    refund = definitive(lambda: client.refund_payment(request, request_id=f"rq-{request.refund_id}"))
    if refund is None:
        return None
    assert refund.amount_minor == (requested or refund.amount_minor) and refund.amount_minor > 0
    assert refund.status in (pb.REFUND_STATUS_PENDING, pb.REFUND_STATUS_SUCCEEDED), refund
    target.left = max(0, target.left - refund.amount_minor)
    return (
        "channel_refund",
        request.refund_id,
        target.payment_id,
        refund.amount_minor,
        requested,
        target.kind,
        refund.creator_amount_minor,
    )


def channel_operation(  # type: ignore[type-arg]
    client: PaygateClient, rng: random.Random, setup: Setup, op_id: str, mine: list[ChannelPayment]
) -> tuple | None:
    """A refund of one of this client's channel payments (a third of the time), else a new channel payment. A
    payment not settled yet is left alone, except now and then, to see the refund refused."""
    candidates = [p for p in mine if p.left > 0]
    if candidates and rng.random() < 1 / 3:
        target = rng.choice(candidates)
        status = definitive(lambda: client.get_payment(pb.GetPaymentRequest(payment_id=target.payment_id))).status  # type: ignore[union-attr]
        if status in REFUNDABLE or (status == pb.PAYMENT_STATUS_PENDING and rng.random() < 0.2):
            return channel_refund(client, rng, op_id, target)
        if status not in REFUNDABLE and status != pb.PAYMENT_STATUS_PENDING:
            target.left = 0  # declined: nothing to refund
    entry = channel_payment(client, rng, setup, op_id)
    if entry is not None and not entry[7]:
        mine.append(ChannelPayment(entry[5], entry[0].removeprefix("channel_"), entry[3]))
    return entry


def refunds_once_settled(client: PaygateClient, rng: random.Random, setup: Setup, seed: int, mine: list[ChannelPayment]) -> list[tuple]:  # type: ignore[type-arg]
    """After the random operations: wait (bounded) for a few of this client's channel payments to settle, and
    refund them, so that every channel has refunds even when the run is shorter than its settling time."""
    applied = []
    candidates = [p for p in mine if p.left > 0]
    for n, target in enumerate(rng.sample(candidates, min(setup.plan.refunds_after, len(candidates)))):
        for _ in range(setup.plan.settle_polls):
            payment = definitive(lambda t=target: client.get_payment(pb.GetPaymentRequest(payment_id=t.payment_id)))
            if payment is None or payment.status != pb.PAYMENT_STATUS_PENDING:
                break
            time.sleep(POLL_S)
        if payment is not None and payment.status in REFUNDABLE:
            entry = channel_refund(client, rng, f"{seed}-after-{n}-{uuid.uuid4().hex[:6]}", target)
            if entry is not None:
                applied.append(entry)
    return applied


def client_process(setup: Setup, seed: int, count: int) -> list[tuple]:  # type: ignore[type-arg]
    """Run `count` random operations; return the log of those answered OK."""
    rng = random.Random(seed)
    applied: list[tuple] = []  # type: ignore[type-arg]
    my_purchases: list[tuple[str, int]] = []  # wallet purchases: (payment_id, refundable left)
    mine: list[ChannelPayment] = []
    with PaygateClient(setup.target, setup.key_id, setup.secret, timeout_s=15) as client:
        for i in range(count):
            op_id = f"{seed}-{i}-{uuid.uuid4().hex[:6]}"
            if rng.random() < setup.plan.channel_share:
                entry = channel_operation(client, rng, setup, op_id, mine)
            else:
                entry = wallet_operation(client, rng, setup, op_id, my_purchases)
            if entry is not None:
                applied.append(entry)
        applied.extend(refunds_once_settled(client, rng, setup, seed, mine))
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


def misbehave(sim: Simulator, settings: dict[str, dict[str, Any]]) -> None:
    for channel, setting in settings.items():
        sim.control("POST", f"/misbehave/{channel}", {"clear": True, **setting})


def misbehaviour_midway(sim: Simulator, after_s: float, stop: threading.Event, log: list[str]) -> None:
    if not stop.wait(after_s):
        misbehave(sim, MISBEHAVIOUR_MIDWAY)
        log.append("midway")


def settle_payments(client: PaygateClient, payment_ids: list[str], polls: int) -> tuple[dict[str, pb.Payment], float]:
    """Poll every channel payment until none is PENDING (bounded); the payments as they are, and how long it took."""
    started, found, pending = time.perf_counter(), {}, list(payment_ids)
    for _ in range(polls):
        for payment_id in pending:
            found[payment_id] = definitive(lambda p=payment_id: client.get_payment(pb.GetPaymentRequest(payment_id=p)))
        pending = [p for p in pending if found[p].status == pb.PAYMENT_STATUS_PENDING]
        if not pending:
            return found, time.perf_counter() - started
        time.sleep(POLL_S)
    raise AssertionError(f"{len(pending)} channel payments still PENDING after {polls} polls: {pending[:20]}")


def settle_refunds(client: PaygateClient, entries: list[tuple], polls: int) -> tuple[dict[str, pb.Refund], float]:  # type: ignore[type-arg]
    """Replay every channel refund (the same request answers it as it is now) until none is PENDING (bounded)."""
    started, found = time.perf_counter(), {}
    requests = {
        e[1]: pb.RefundPaymentRequest(payment_id=e[2], refund_id=e[1], amount_minor=e[4]) for e in entries
    }
    pending = list(requests)
    for _ in range(polls):
        for refund_id in pending:
            refund = definitive(lambda r=requests[refund_id]: client.refund_payment(r, request_id=f"rq-{r.refund_id}"))
            assert refund is not None, f"replaying refund {refund_id}, answered OK before, was refused"
            found[refund_id] = refund
        pending = [r for r in pending if found[r].status == pb.REFUND_STATUS_PENDING]
        if not pending:
            return found, time.perf_counter() - started
        time.sleep(POLL_S)
    raise AssertionError(f"{len(pending)} channel refunds still PENDING after {polls} replays: {pending[:20]}")


def run_clients(stack: Stack, setup: Setup, seed: int) -> tuple[list[tuple], list[str], list[str], float]:  # type: ignore[type-arg]
    plan = setup.plan
    stop = threading.Event()
    killed: list[str] = []
    switched: list[str] = []
    murderer = threading.Thread(target=killer, args=(stack, plan.kills, stop, random.Random(seed), killed))
    switcher = threading.Thread(target=misbehaviour_midway, args=(setup.sim, plan.midway_s, stop, switched))
    misbehave(setup.sim, MISBEHAVIOUR_FIRST)
    started = time.perf_counter()
    murderer.start()
    switcher.start()
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(plan.processes) as pool:
            logs = pool.starmap(
                client_process,
                [(setup, seed * 1000 + n, plan.operations_per_process) for n in range(plan.processes)],
            )
    finally:
        stop.set()
        murderer.join()
        switcher.join()
    return [entry for log in logs for entry in log], killed, switched, time.perf_counter() - started
