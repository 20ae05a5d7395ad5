"""Random money operations from many client processes against a real stack, with workers killed mid-flight.

The stack runs its channels (the provider simulator and the notification edge) with a quick janitor. Each client
process runs a seeded random mix of top-ups, wallet purchases, refunds of its own purchases and transfers between
shared wallets, and — for a share of its operations — top-ups and purchases through a random provider channel
(Alipay, WeChat Pay, UnionPay, card with good and declined cards) and refunds, partial or full, of the channel
payments it made. The simulator misbehaves meanwhile: Alipay's callbacks come twice and out of order, WeChat
Pay's are forged for the first half of the run, UnionPay's never come in the first half (only the janitor's query
settles those payments and refunds), and two provider calls at a time answer 5xx (the adapter retries them).
Every call is retried with the same idempotency id until it gets a definitive answer (OK, or a business refusal),
exactly as a well-behaved caller would, so every operation ends either applied once or refused. Afterwards:

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

import itertools
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import redis
from sqlalchemy import create_engine, func, select

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.schema import accounts, channel_notifications, payments, refunds, transfers
from tests.e2e.channel_support import DECLINE_CARDS, SUCCESS_CARD, Simulator
from tests.support import Stack, start_stack, wait_until

DEFINITIVE_REFUSALS = {grpc.StatusCode.FAILED_PRECONDITION}
RETRYABLE = {grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_TRIES = 200  # per operation; with back-off this outlasts a worker restart and any expiring lease
POLL_S = 0.25  # between two looks at what is still PENDING
RECOVERY_GRACE = timedelta(seconds=10)  # after every worker is back in the gateway's rotation (reconnects within 1 s)
IN_FLIGHT_GRACE = timedelta(seconds=5)  # a callback stored this recently may still be with a worker

CHANNELS = {
    "alipay": (pb.PAYMENT_METHOD_ALIPAY, pb.PAYMENT_SCENE_UNSPECIFIED),
    "wechatpay": (pb.PAYMENT_METHOD_WECHAT_PAY, pb.PAYMENT_SCENE_UNSPECIFIED),
    "unionpay": (pb.PAYMENT_METHOD_UNIONPAY, pb.PAYMENT_SCENE_IN_APP),
    "card": (pb.PAYMENT_METHOD_CARD, pb.PAYMENT_SCENE_UNSPECIFIED),
}
PAID = {pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, pb.PAYMENT_STATUS_REFUNDED}
REFUNDABLE = {pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED}
# The simulator's misbehaviour before the run, and what replaces it when the first client process is halfway
# through (channels not named stay as they are).
MISBEHAVIOUR_FIRST = {
    "alipay": {"callback": ["duplicate", "out_of_order"]},
    "wechatpay": {"callback": ["forged"], "http_5xx": 2},
    "unionpay": {"callback": ["never"]},
    "card": {},
}
MISBEHAVIOUR_MIDWAY = {
    "alipay": {"callback": ["duplicate", "out_of_order"], "http_5xx": 2},
    "wechatpay": {"callback": ["duplicate", "delay_ms=300"]},
    # UnionPay's callbacks come again, late: a refund whose callback never comes waits 30 s for the janitor's
    # first query, which the short run cannot afford for the refunds it makes at its end.
    "unionpay": {"callback": ["delay_ms=500"]},
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
    settle_polls: int  # bound on the waits for channel payments and refunds to settle (POLL_S apart)


SHORT = Plan(4, 120, 6, kills=2, channel_share=0.1, refunds_after=2, settle_polls=400)
LONG = Plan(8, 2_000, 24, kills=12, channel_share=0.2, refunds_after=10, settle_polls=1_200)


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
    ca_file: str | None = None  # the stack's dev CA (TLS), None for a plaintext stack


@dataclass
class ChannelPayment:
    """A channel payment a client made and may refund: how much it believes is left to refund."""

    payment_id: str
    kind: str  # "top_up" | "purchase"
    channel: str
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
) -> tuple:
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
        return ("refused", "top_up")
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
        return ("refused", "purchase")
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
        return ("refused", "refund")
    else:
        target_user = rng.choice([u for u in setup.users if u != user])
        amount = rng.randint(10, 800)
        request = pb.TransferRequest(
            transfer_id=f"x-{op_id}", from_user_id=user, to_user_id=target_user, amount_minor=amount, currency="CNY"
        )
        if call_until_definitive(lambda r=request: client.transfer(r)) == "ok":
            return ("transfer", request.transfer_id, user, target_user, amount)
        return ("refused", "transfer")


def channel_payment(client: PaygateClient, rng: random.Random, setup: Setup, op_id: str) -> tuple | None:  # type: ignore[type-arg]
    """A top-up or a purchase through a random provider channel; a quarter of the card payments are declined."""
    user = rng.choice(setup.users)
    channel = rng.choice(sorted(CHANNELS))
    method, scene = CHANNELS[channel]
    declined, card_token = False, ""
    if channel == "card":
        declined = rng.random() < 0.25
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
        return ("refused", f"channel_{kind}")
    # What the payer needs (PENDING), or the card's verdict at once; a retry may already see it SUCCEEDED.
    assert payment.status in (pb.PAYMENT_STATUS_PENDING, pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_FAILED)
    return (
        f"channel_{kind}",
        request.order_id,
        user,
        amount,
        channel,
        payment.payment_id,
        payment.attempt_id,
        declined,
    )


def channel_refund(client: PaygateClient, rng: random.Random, op_id: str, target: ChannelPayment) -> tuple | None:  # type: ignore[type-arg]
    """A refund, partial or "the rest" (amount 0), of one of this client's channel payments."""
    requested = 0 if rng.random() < 0.3 else rng.randint(1, target.left)
    request = pb.RefundPaymentRequest(payment_id=target.payment_id, refund_id=f"cr-{op_id}", amount_minor=requested)
    refund = definitive(lambda: client.refund_payment(request, request_id=f"rq-{request.refund_id}"))
    if refund is None:
        return ("refused", "channel_refund")
    assert refund.amount_minor > 0 and requested in (0, refund.amount_minor), refund
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
    if entry is not None and entry[0] != "refused" and not entry[7]:
        mine.append(ChannelPayment(entry[5], entry[0].removeprefix("channel_"), entry[4], entry[3]))
    return entry


def refunds_once_settled(
    client: PaygateClient, rng: random.Random, setup: Setup, seed: int, mine: list[ChannelPayment]
) -> list[tuple]:  # type: ignore[type-arg]
    """After the random operations: wait (bounded) for a few of this client's channel payments to settle, and
    refund them, so that every channel has refunds even when the run is shorter than its settling time."""
    applied = []
    candidates = [p for p in mine if p.left > 0]
    rng.shuffle(candidates)
    # One payment per channel in turn, each process starting at another channel, so that all of them get refunds.
    channels = sorted(CHANNELS)
    channels = channels[seed % len(channels) :] + channels[: seed % len(channels)]
    turns = itertools.zip_longest(*([p for p in candidates if p.channel == c] for c in channels))
    chosen = [p for turn in turns for p in turn if p is not None][: setup.plan.refunds_after]
    for n, target in enumerate(chosen):
        for _ in range(setup.plan.settle_polls):
            payment = definitive(lambda t=target: client.get_payment(pb.GetPaymentRequest(payment_id=t.payment_id)))
            if payment is None or payment.status != pb.PAYMENT_STATUS_PENDING:
                break
            time.sleep(POLL_S)
        if payment is not None and payment.status in REFUNDABLE:
            entry = channel_refund(client, rng, f"{seed}-after-{n}-{uuid.uuid4().hex[:6]}", target)
            applied.append(entry)
    return applied


def client_process(setup: Setup, seed: int, count: int, switches: bool) -> list[tuple]:  # type: ignore[type-arg]
    """Run `count` random operations; return the log of those answered OK (and of the refused ones, by kind).
    The process that `switches` changes the simulator's misbehaviour halfway through its operations."""
    rng = random.Random(seed)
    applied: list[tuple] = []  # type: ignore[type-arg]
    my_purchases: list[tuple[str, int]] = []  # wallet purchases: (payment_id, refundable left)
    mine: list[ChannelPayment] = []
    with PaygateClient(
        setup.target, setup.key_id, setup.secret, timeout_s=15, root_certificates=setup.ca_file
    ) as client:
        for i in range(count):
            op_id = f"{seed}-{i}-{uuid.uuid4().hex[:6]}"
            if switches and i == count // 2:
                misbehave(setup.sim, MISBEHAVIOUR_MIDWAY)
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


def recovery(stack: Stack, murderer: threading.Thread, since: list[datetime]) -> None:
    """When every worker is back in the gateway's rotation after the last kill (UTC, as the stack stores times)."""
    murderer.join()
    wait_until(lambda: stack.healthy_workers() == 3, attempts=1_200, what="3 workers back after the kills")
    since.append(datetime.now(UTC))


def misbehave(sim: Simulator, settings: dict[str, dict[str, Any]]) -> None:
    for channel, setting in settings.items():
        sim.control("POST", f"/misbehave/{channel}", {"clear": True, **setting})


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
    requests = {e[1]: pb.RefundPaymentRequest(payment_id=e[2], refund_id=e[1], amount_minor=e[4]) for e in entries}
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


def run_clients(stack: Stack, setup: Setup, seed: int) -> tuple[list[tuple], list[str], datetime, float]:  # type: ignore[type-arg]
    plan = setup.plan
    stop = threading.Event()
    killed: list[str] = []
    recovered: list[datetime] = []
    murderer = threading.Thread(target=killer, args=(stack, plan.kills, stop, random.Random(seed), killed))
    watcher = threading.Thread(target=recovery, args=(stack, murderer, recovered))
    misbehave(setup.sim, MISBEHAVIOUR_FIRST)
    started = time.perf_counter()
    murderer.start()
    watcher.start()
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(plan.processes) as pool:
            logs = pool.starmap(
                client_process,
                [(setup, seed * 1000 + n, plan.operations_per_process, n == 0) for n in range(plan.processes)],
            )
    finally:
        stop.set()
        murderer.join()
    elapsed = time.perf_counter() - started
    watcher.join()
    return [entry for log in logs for entry in log], killed, recovered[0], elapsed


def wallet_model(  # type: ignore[type-arg]
    users: list[str], applied: list[tuple], paid: dict[str, pb.Payment], refunded: dict[str, pb.Refund]
) -> dict[str, int]:
    """Wallets move only by what was answered OK: a channel top-up once SUCCEEDED, a refund of one when accepted
    (unless the provider refused it in the end); channel purchases and their refunds never touch a wallet."""
    expected = dict.fromkeys(users, 0)
    for entry in applied:
        kind = entry[0]
        if kind == "top_up":
            expected[entry[2]] += entry[3]
        elif kind == "purchase":
            expected[entry[2]] -= entry[3]
        elif kind == "refund":
            expected[paid[entry[2]].user_id] += entry[3]
        elif kind == "transfer":
            expected[entry[2]] -= entry[4]
            expected[entry[3]] += entry[4]
        elif kind == "channel_top_up" and paid[entry[5]].status in PAID:
            expected[entry[2]] += entry[3]
        elif kind == "channel_refund" and entry[5] == "top_up" and refunded[entry[1]].status != pb.REFUND_STATUS_FAILED:
            expected[paid[entry[2]].user_id] -= entry[3]
    return expected


def payable_model(  # type: ignore[type-arg]
    creators: list[str], applied: list[tuple], paid: dict[str, pb.Payment], refunded: dict[str, pb.Refund]
) -> dict[str, int]:
    """A creator is owed its share of each paid purchase, less its share of each accepted refund (taken from the
    payable at once, also through a channel, and given back only if the provider refused the refund)."""
    expected = dict.fromkeys(creators, 0)
    for payment in paid.values():
        if payment.type == pb.PAYMENT_TYPE_PURCHASE and payment.payee_id in expected and payment.status in PAID:
            expected[payment.payee_id] += payment.creator_amount_minor
    for entry in applied:
        if entry[0] == "refund" and paid[entry[2]].payee_id in expected:
            expected[paid[entry[2]].payee_id] -= entry[4]
        elif (
            entry[0] == "channel_refund"
            and paid[entry[2]].payee_id in expected
            and refunded[entry[1]].status != pb.REFUND_STATUS_FAILED
        ):
            expected[paid[entry[2]].payee_id] -= entry[6]
    return expected


def check_payments(applied: list[tuple], paid: dict[str, pb.Payment], refunded: dict[str, pb.Refund]) -> None:  # type: ignore[type-arg]
    """Each channel payment ended as the simulator decided; each payment's refunded total is its accepted refunds."""
    for entry in applied:
        if entry[0] in ("channel_top_up", "channel_purchase"):
            payment = paid[entry[5]]
            wanted = {pb.PAYMENT_STATUS_FAILED} if entry[7] else PAID
            assert payment.status in wanted, (
                f"{entry}: {pb.PaymentStatus.Name(payment.status)} {payment.failure_reason}"
            )
    refunded_total: Counter[str] = Counter()
    for entry in applied:
        if entry[0] == "refund" or (
            entry[0] == "channel_refund" and refunded[entry[1]].status != pb.REFUND_STATUS_FAILED
        ):
            refunded_total[entry[2]] += entry[3]
    for payment_id, payment in paid.items():
        assert payment.refunded_minor == refunded_total[payment_id], (
            f"payment {payment_id} ({payment.order_id}): refunded_minor {payment.refunded_minor}, "
            f"accepted refunds {refunded_total[payment_id]}"
        )


def check_simulator(
    sim: Simulator, applied: list[tuple], paid: dict[str, pb.Payment], rng: random.Random, size: int
) -> int:  # type: ignore[type-arg]
    """The provider collected and returned exactly what we say, for a sample (refunded payments first)."""
    entries = [e for e in applied if e[0] in ("channel_top_up", "channel_purchase")]
    refunded = [e for e in entries if paid[e[5]].refunded_minor]
    others = [e for e in entries if not paid[e[5]].refunded_minor]
    sample = rng.sample(refunded, min(size, len(refunded)))
    sample += rng.sample(others, min(max(size // 4, size - len(sample)), len(others)))
    for entry in sample:
        payment = paid[entry[5]]
        order = sim.order(entry[4], entry[6])
        assert order["refunded_amount"] == payment.refunded_minor, (entry, order, payment)
        assert order["paid_amount"] == (0 if entry[7] else payment.amount_minor), (entry, order, payment)
    return len(sample)


def stored_counts(database_url: str, users: list[str], creators: list[str]) -> tuple[dict[str, Any], Counter[str]]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored_payments = connection.execute(
            select(payments.c.payment_type, func.count())
            .where(payments.c.user_id.in_(users))
            .group_by(payments.c.payment_type)
        ).all()
        stored_refunds = connection.execute(
            select(func.count())
            .select_from(refunds.join(payments, refunds.c.payment_id == payments.c.payment_id))
            .where(payments.c.user_id.in_(users))
        ).scalar_one()
        stored_transfers = connection.execute(
            select(func.count()).select_from(transfers).where(transfers.c.from_user_id.in_(users))
        ).scalar_one()
        payables = connection.execute(
            select(accounts.c.subject, accounts.c.balance_minor).where(
                accounts.c.kind == "payable", accounts.c.subject.in_(creators), accounts.c.currency == "CNY"
            )
        ).all()
        verdicts = connection.execute(
            select(
                channel_notifications.c.channel,
                channel_notifications.c.verdict,
                channel_notifications.c.reason,
                func.count(),
            ).group_by(channel_notifications.c.channel, channel_notifications.c.verdict, channel_notifications.c.reason)
        ).all()
        unhandled = connection.execute(
            select(channel_notifications.c.notification_id, channel_notifications.c.received_at).where(
                channel_notifications.c.verdict == "received"
            )
        ).all()
    engine.dispose()
    notes = Counter({f"{c}:{v}{'/' + r if r else ''}": n for c, v, r, n in verdicts})
    stored = {
        "payments": dict(stored_payments),
        "refunds": stored_refunds,
        "transfers": stored_transfers,
        "payables": dict(payables),
        # callbacks stored by the edge that no worker took (answered 503: the provider delivers again)
        "unhandled": {n: at if at.tzinfo else at.replace(tzinfo=UTC) for n, at in unhandled},
    }
    return stored, notes


def run_and_check(stack: Stack, database_url: str, plan: Plan, seed: int) -> str:
    key_id, secret = stack.create_key("random-ops")
    run = uuid.uuid4().hex[:6]
    users = [f"u{n}-{run}" for n in range(plan.users)]
    creators = [f"creator-a-{run}", f"creator-b-{run}"]
    sim = Simulator.of(stack)
    setup = Setup(stack.listen, key_id, secret, users, creators, sim, plan, ca_file=stack.ca_file)
    logged, killed, recovered, elapsed = run_clients(stack, setup, seed)
    applied = [e for e in logged if e[0] != "refused"]
    refused = Counter(e[1] for e in logged if e[0] == "refused")
    channel_entries = [e for e in applied if e[0] in ("channel_top_up", "channel_purchase")]
    refund_entries = [e for e in applied if e[0] == "channel_refund"]

    with stack.client(key_id, secret, timeout_s=15) as client:
        # Every channel payment settles (the janitor resolves those whose callback never came or was forged)...
        _, payments_wait = settle_payments(client, [e[5] for e in channel_entries], plan.settle_polls)
        # ...and so does every channel refund, replayed as a caller would.
        refunded, refunds_wait = settle_refunds(client, refund_entries, plan.settle_polls)
        paid: dict[str, pb.Payment] = {}
        for entry in applied:
            if entry[0] == "purchase":
                payment = client.get_payment(pb.GetPaymentRequest(order_id=entry[1]))
                paid[payment.payment_id] = payment
            elif entry[0] in ("channel_top_up", "channel_purchase"):
                paid[entry[5]] = client.get_payment(pb.GetPaymentRequest(payment_id=entry[5]))
        check_payments(applied, paid, refunded)
        expected = wallet_model(users, applied, paid, refunded)
        for user in users:
            balance = client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor
            assert balance == expected[user], f"{user}: ledger {balance}, model {expected[user]}"
            assert balance >= 0
    sampled = check_simulator(sim, applied, paid, random.Random(seed), 40 if plan is SHORT else 200)

    # Nothing else moved money: the ledger holds exactly the operations answered OK.
    counts = Counter(e[0] for e in applied)
    checked_at = datetime.now(UTC)
    stored, notes = stored_counts(database_url, users, creators)
    wanted_payments = {
        "top_up": counts["top_up"] + counts["channel_top_up"],
        "purchase": counts["purchase"] + counts["channel_purchase"],
    }
    assert stored["payments"] == {k: v for k, v in wanted_payments.items() if v}
    assert stored["refunds"] == counts["refund"] + counts["channel_refund"]
    assert stored["transfers"] == counts["transfer"]
    expected_payables = payable_model(creators, applied, paid, refunded)
    assert {c: stored["payables"].get(c, 0) for c in creators} == expected_payables
    # While workers die, a callback may find none to take it (503, delivered again later). Once every worker is
    # back, each must be taken: a provider's next try may be hours away.
    refused_late = {
        n: at.isoformat()
        for n, at in stored["unhandled"].items()
        if recovered + RECOVERY_GRACE < at < checked_at - IN_FLIGHT_GRACE
    }
    assert not refused_late, (
        f"the notification edge handed no worker {len(refused_late)} callbacks (id: received at) although every "
        f"worker had been back since {recovered.isoformat()}: {dict(list(refused_late.items())[:10])}"
    )

    verified = stack.cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    channel_outcomes = Counter(f"{e[4]}:{pb.PaymentStatus.Name(paid[e[5]].status)[15:]}" for e in channel_entries)
    refund_outcomes = Counter(f"{e[5]}:{pb.RefundStatus.Name(refunded[e[1]].status)[14:]}" for e in refund_entries)
    return (
        f"{plan.processes * plan.operations_per_process} random operations by {plan.processes} processes on "
        f"{plan.users} wallets (+ {plan.refunds_after} refunds each once settled), 3 workers, "
        f"{len(killed)} worker SIGKILLs; {len(applied)} applied ({dict(sorted(counts.items()))}), "
        f"{sum(refused.values())} refused ({dict(sorted(refused.items()))}); run {elapsed:.1f} s; "
        f"channel payments settled in {payments_wait:.1f} s more ({dict(sorted(channel_outcomes.items()))}); "
        f"channel refunds settled in {refunds_wait:.1f} s more ({dict(sorted(refund_outcomes.items()))}); "
        f"notifications {dict(sorted(notes.items()))}; simulator agrees on {sampled} payments; "
        f"model = ledger (wallets and payables); ledger verify OK"
    )


STACK_ENV = {
    # Shorter leases so that locks and in-flight guards left by a killed worker expire quickly.
    "PAYGATE_LOCK_LEASE_MS": "1500",
    "PAYGATE_IDEMPOTENCY_LEASE_MS": "2000",
    # The janitor asks soon, so that payments and refunds whose callback never came settle quickly.
    "PAYGATE_JANITOR_INTERVAL_S": "0.5",
    "PAYGATE_JANITOR_FIRST_CHECK_S": "1",
}


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def crash_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    """`paygate serve --workers 3` with its channels, on each database."""
    if request.param == "sqlite":
        stack = start_stack(tmp_path / "stack", workers=3, extra_env=STACK_ENV, channels=True)
        url = f"sqlite:///{stack.data_dir / 'paygate.sqlite3'}"
    else:
        url = str(request.getfixturevalue(f"{request.param}_url"))
        stack = start_stack(tmp_path / "stack", workers=3, database_url=url, extra_env=STACK_ENV, channels=True)
    yield stack, url
    assert stack.stop() == 0


JANITOR_LEASE_KEY = "paygate:{janitor:attempts}:lock"  # one worker at a time runs a janitor round under it


def unionpay_top_up(client: PaygateClient, user: str) -> pb.Payment:
    request = pb.TopUpRequest(
        order_id=f"t-{uuid.uuid4().hex[:10]}",
        user_id=user,
        amount_minor=5_00,
        currency="CNY",
        method=pb.PAYMENT_METHOD_UNIONPAY,
        scene=pb.PAYMENT_SCENE_IN_APP,
    )
    payment = definitive(lambda: client.top_up(request))
    assert payment is not None
    return payment


def test_a_worker_killed_during_a_janitor_round_does_not_stall_the_janitor(tmp_path: Path) -> None:
    """The random runs above kill workers at random moments; one that dies inside a janitor round must not keep
    the others from asking the providers for long. A payment whose callback never comes is settled by the
    janitor's query about 5 s after it is made; after such a crash it must still be, within a few seconds more
    (the bound a dead holder's guards and locks get, docs/ledger.md "When a worker dies")."""
    stack = start_stack(tmp_path / "stack", workers=3, extra_env=STACK_ENV, channels=True)
    try:
        sim = Simulator.of(stack)
        key_id, secret = stack.create_key("janitor-crash")
        store = redis.Redis.from_url((stack.data_dir / "run" / "redis.url").read_text().strip())
        with stack.client(key_id, secret, timeout_s=15) as client:
            misbehave(sim, {"unionpay": {"callback": ["never"]}})
            # Payers who walk away: their attempts stay due for the janitor, whose rounds slow queries make long.
            for _ in range(4):
                payment = unionpay_top_up(client, "walks-away")
                sim.control("POST", f"/orders/unionpay/{payment.attempt_id}/abandon")
            misbehave(sim, {"unionpay": {"callback": ["never"], "latency_ms": 400}})
            orphaned = 0
            for _ in range(5):
                wait_until(lambda: store.exists(JANITOR_LEASE_KEY), attempts=2_000, interval_s=0.005, what="a round")
                for worker in [name for name in stack.state()["children"] if name.startswith("worker-")]:
                    pid = stack.worker_pid(worker)
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                orphaned = int(store.pttl(JANITOR_LEASE_KEY))
                if orphaned > 0:
                    break  # every worker died inside a round: nobody released the lease
            assert orphaned > 0, "no kill landed inside a janitor round"
            misbehave(sim, {"unionpay": {"callback": ["never"]}})
            wait_until(lambda: stack.healthy_workers() == 3, attempts=600, what="3 workers back")
            payment = unionpay_top_up(client, "pays")
            found: list[pb.Payment] = []

            def settled() -> bool:
                current = client.get_payment(pb.GetPaymentRequest(payment_id=payment.payment_id))
                found[:] = [current]
                return current.status != pb.PAYMENT_STATUS_PENDING

            # A bounded number of polls (about 40 s): a janitor lease orphaned for a minute would not be over.
            try:
                wait_until(settled, attempts=800, interval_s=0.05, what="the payment settled by the janitor")
            except AssertionError:
                left = store.pttl(JANITOR_LEASE_KEY)
                raise AssertionError(
                    f"payment {payment.payment_id} (callback never sent) still PENDING: no janitor round since the "
                    f"crash; the lease the killed worker held was left with {orphaned} ms and still has {left} ms"
                ) from None
            settled_payment = found[0]
            assert settled_payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    finally:
        assert stack.stop() == 0


def test_random_operations_with_channels_and_worker_crashes(crash_stack: tuple[Stack, str]) -> None:
    stack, url = crash_stack
    print(f"\non {url.split(':')[0]}: " + run_and_check(stack, url, SHORT, seed=7))


@pytest.mark.stress
def test_stress_random_operations_with_worker_crashes(crash_stack: tuple[Stack, str]) -> None:
    stack, url = crash_stack
    print(f"\nstress on {url.split(':')[0]}: " + run_and_check(stack, url, LONG, seed=11))
