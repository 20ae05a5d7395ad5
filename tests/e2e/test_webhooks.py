"""Webhooks through the real stack (docs/events.md): the README's purchase reaches a signed webhook and the same
events stream; the relay killed (SIGKILL) between commit and delivery and mid-delivery loses nothing; a receiver
that was down gets everything in order; dead letters and redelivery from the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack, wait_until
from tests.webhook_receiver import Receiver

WORKERS = ("worker-1", "worker-2")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Fast relay rounds and a short retry schedule (three retries, then a dead letter)."""
    env = {
        "PAYGATE_WEBHOOK_INTERVAL_S": "0.1",
        "PAYGATE_WEBHOOK_RETRY_SCHEDULE_S": "0.3,0.3,0.3",
        # A killed relay's lease lapses after budget + timeouts + 2 s: 5 s here instead of 14 s.
        "PAYGATE_WEBHOOK_ROUND_BUDGET_S": "1",
        "PAYGATE_WEBHOOK_CONNECT_TIMEOUT_S": "0.5",
        "PAYGATE_WEBHOOK_READ_TIMEOUT_S": "1.5",
    }
    running = start_stack(Path(tmp_path_factory.mktemp("webhooks")), workers=2, extra_env=env)
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def cli_json(stack: Stack, *args: str) -> dict[str, Any]:
    result = stack.cli("webhooks", *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def owner_with_endpoint(stack: Stack, receiver: Receiver, types: str = "") -> tuple[str, tuple[str, str], str]:
    owner = uid("hooks")
    key = stack.create_key(owner)
    added = cli_json(stack, "add", "--owner", owner, "--url", receiver.url, *(["--types", types] if types else []))
    return owner, key, added["secret"]


def buy(client: PaygateClient, user: str, order_id: str | None = None) -> pb.Payment:
    return client.create_payment(
        pb.CreatePaymentRequest(
            order_id=order_id or uid("o"), user_id=user, amount_minor=4990, currency="CNY",
            method=pb.PAYMENT_METHOD_WALLET, payee_id="creator-42", description="Algorithms, part I",
        )
    )  # fmt: skip


def top_up(client: PaygateClient, user: str) -> pb.Payment:
    return client.top_up(
        pb.TopUpRequest(
            order_id=uid("t"), user_id=user, amount_minor=1_000_000, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )


def streamed_ids(stack: Stack, key: tuple[str, str], count: int) -> list[str]:
    with stack.client(*key) as client:
        ids = []
        for event in client.stream_events():
            ids.append(event.event_id)
            if len(ids) == count:
                return ids
    raise AssertionError("the stream ended")


def first_occurrences(ids: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for event_id in ids:
        seen.setdefault(event_id, None)
    return list(seen)


def test_the_readme_purchase_reaches_a_signed_webhook_and_the_stream(stack: Stack, receiver: Receiver) -> None:
    owner, key, secret = owner_with_endpoint(stack, receiver)
    with stack.client(*key) as client:
        top_up(client, "learner-1")
        purchase = buy(client, "learner-1", "readme-purchase-1")
    wait_until(lambda: len(receiver.received) >= 4, attempts=600, what="four deliveries")
    events = receiver.events([secret])  # every delivery verifies with the endpoint's secret
    assert [e["type"] for e in events] == ["EVENT_TYPE_PAYMENT_CREATED", "EVENT_TYPE_PAYMENT_SUCCEEDED"] * 2
    assert events[3]["payment"]["paymentId"] == purchase.payment_id
    assert events[3]["payment"]["orderId"] == "readme-purchase-1" and events[3]["payment"]["amountMinor"] == "4990"
    assert streamed_ids(stack, key, 4) == [e["eventId"] for e in events]  # the same events, the same order
    listed = cli_json(stack, "list", "--owner", owner)["endpoints"]
    assert [e["url"] for e in listed] == [receiver.url] and "secret" not in listed[0]


def test_a_relay_killed_before_and_during_delivery_loses_nothing(stack: Stack, receiver: Receiver) -> None:
    _, key, secret = owner_with_endpoint(stack, receiver)
    with stack.client(*key) as client:
        user = uid("u")
        receiver.status = 503  # nothing is accepted: every event stays between its commit and its delivery
        top_up(client, user)
        for _ in range(3):
            buy(client, user)
        wait_until(lambda: receiver.received, attempts=600, what="a first attempt")
        kill_workers(stack)  # the relay dies between commit and delivery
        receiver.status = 200
        receiver.delay_s = 1.0
        receiver.arrived.clear()
        wait_until(receiver.arrived.is_set, attempts=1200, what="a delivery after the restart")
        kill_workers(stack)  # and now in the middle of one (the receiver is still answering it)
        receiver.delay_s = 0.0
        buy_retrying(client, user)  # right after a restart a call may meet UNAVAILABLE: a caller retries
    expected = streamed_ids(stack, key, 10)
    wait_until(lambda: set(expected) <= set(receiver.event_ids()), attempts=1200, what="every event delivered")
    assert first_occurrences(receiver.event_ids()) == expected  # at least once, and in commit order
    assert len(receiver.events([secret])) == len(receiver.received)


def buy_retrying(client: PaygateClient, user: str) -> pb.Payment:
    order_id = uid("o")
    for _ in range(100):
        try:
            return buy(client, user, order_id)  # the same order id: one purchase, however many tries
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
                raise
            threading.Event().wait(0.1)
    raise AssertionError("the purchase never went through")


def kill_workers(stack: Stack) -> None:
    for worker_id in WORKERS:
        pid = stack.worker_pid(worker_id)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: stack.healthy_workers() == len(WORKERS), attempts=1200, what="the workers back")


def test_dead_letters_and_redelivery_from_the_cli(stack: Stack, receiver: Receiver) -> None:
    owner, key, secret = owner_with_endpoint(stack, receiver, types="EVENT_TYPE_PAYMENT_SUCCEEDED")
    receiver.status = 500
    with stack.client(*key) as client:
        paid = top_up(client, uid("u"))
    wait_until(lambda: len(receiver.received) >= 4, attempts=1200, what="four failed attempts")
    wait_until(lambda: cli_json(stack, "dead-letters", "--owner", owner)["dead_letters"], attempts=20, interval_s=0.5,
               what="a dead letter")  # fmt: skip
    (letter,) = cli_json(stack, "dead-letters", "--owner", owner)["dead_letters"]
    assert letter["attempts"] == 4 and "500" in letter["last_error"]  # the first attempt and three retries
    assert len(receiver.received) == 4
    endpoint = letter["endpoint_id"]
    metrics = stack.metrics_text()  # every worker's counters, summed: the relay may have moved between rounds
    assert f'paygate_webhook_deliveries_total{{endpoint="{endpoint}",outcome="http_500"}} 4.0' in metrics
    assert f'paygate_webhook_dead_letters_total{{endpoint="{endpoint}"}} 1.0' in metrics
    assert "paygate_webhook_lag_seconds " in metrics
    receiver.status = 200
    again = cli_json(stack, "redeliver", letter["event_id"])
    assert [d["outcome"] for d in again["deliveries"]] == ["delivered"] and not again["failed"]
    delivered = receiver.events([secret])[-1]
    assert delivered["eventId"] == letter["event_id"] and delivered["payment"]["paymentId"] == paid.payment_id
    assert cli_json(stack, "dead-letters", "--owner", owner)["dead_letters"][0]["redelivered_at"]
    missing = stack.cli("webhooks", "redeliver", "evt_" + "0" * 26)
    assert missing.returncode == 2 and "no event" in missing.stderr
