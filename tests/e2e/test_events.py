"""StreamEvents through the real stack (docs/events.md): history after a cursor, then live, per owner; resumed
after a worker dies without a gap or a repeat; refusals for bad cursors, types and scopes."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack, wait_until

SUCCEEDED = pb.EVENT_TYPE_PAYMENT_SUCCEEDED
CREATED = pb.EVENT_TYPE_PAYMENT_CREATED


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Collector:
    """A StreamEvents loop on a thread of its own, with a client (and channel) of its own."""

    def __init__(self, stack: Stack, key: tuple[str, str], **options: object) -> None:
        self.client = stack.client(*key)
        self.events: list[pb.Event] = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._run, args=(options,), daemon=True)
        self._thread.start()

    def _run(self, options: dict[str, object]) -> None:
        try:
            for event in self.client.stream_events(**options):  # type: ignore[arg-type]
                self.events.append(event)
        except grpc.RpcError as error:
            self.error = error

    def wait_for(self, count: int) -> list[pb.Event]:
        wait_until(lambda: len(self.events) >= count or self.error, attempts=600, what=f"{count} events")
        assert self.error is None, self.error
        return list(self.events)

    def stop(self) -> None:
        self.client.close()  # cancels the stream: the loop ends with CANCELLED
        self._thread.join(timeout=30)


@pytest.fixture
def owner_key(stack: Stack) -> tuple[str, str]:
    return stack.create_key(uid("events"))  # a fresh owner: its events are exactly what the test does


def purchase(client: PaygateClient, user: str, amount: int = 300) -> pb.Payment:
    return client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("o"), user_id=user, amount_minor=amount, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
        )
    )


def funded(client: PaygateClient, amount: int = 10_000) -> str:
    user = uid("u")
    client.top_up(
        pb.TopUpRequest(
            order_id=uid("t"), user_id=user, amount_minor=amount, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    return user


@pytest.fixture
def signed(stack: Stack, owner_key: tuple[str, str]) -> Iterator[PaygateClient]:
    with stack.client(*owner_key) as client:
        yield client


def test_a_stream_sends_history_then_follows_live_in_commit_order(
    stack: Stack, owner_key: tuple[str, str], signed: PaygateClient
) -> None:
    user = funded(signed)
    first = purchase(signed, user)
    collector = Collector(stack, owner_key)
    try:
        history = collector.wait_for(4)  # the top-up's two events and the purchase's two
        assert [e.type for e in history] == [CREATED, SUCCEEDED, CREATED, SUCCEEDED]
        assert history[3].payment == first
        second = purchase(signed, user)
        live = collector.wait_for(6)[4:]
        assert [e.type for e in live] == [CREATED, SUCCEEDED] and live[1].payment == second
        assert len({e.event_id for e in collector.events}) == len(collector.events)
    finally:
        collector.stop()


def test_a_cursor_resumes_after_it_and_types_filter(
    stack: Stack, owner_key: tuple[str, str], signed: PaygateClient
) -> None:
    user = funded(signed)
    purchase(signed, user)
    everything = Collector(stack, owner_key)
    try:
        events = everything.wait_for(4)
    finally:
        everything.stop()
    resumed = Collector(stack, owner_key, after_cursor=events[1].event_id)
    only_successes = Collector(stack, owner_key, types=[SUCCEEDED])
    try:
        assert [e.event_id for e in resumed.wait_for(2)] == [e.event_id for e in events[2:]]
        assert [e.event_id for e in only_successes.wait_for(2)] == [events[1].event_id, events[3].event_id]
        third = purchase(signed, user)
        assert resumed.wait_for(4)[3].payment == third
        assert only_successes.wait_for(3)[2].payment == third
        assert len(resumed.events) == 4 and len(only_successes.events) == 3  # nothing before the cursor, no repeats
    finally:
        resumed.stop()
        only_successes.stop()


def test_refusals_are_clear_and_end_the_stream(stack: Stack, owner_key: tuple[str, str], signed: PaygateClient) -> None:
    other = stack.create_key(uid("events-other"))
    funded(signed)
    mine = Collector(stack, owner_key)
    try:
        my_first = mine.wait_for(1)[0].event_id
    finally:
        mine.stop()
    cases = [
        (other, {"after_cursor": my_first}, grpc.StatusCode.NOT_FOUND, "after_cursor"),  # not the other's event
        (owner_key, {"after_cursor": "evt_" + "0" * 26}, grpc.StatusCode.NOT_FOUND, "after_cursor"),
        (owner_key, {"after_cursor": "bad cursor\n"}, grpc.StatusCode.INVALID_ARGUMENT, "after_cursor"),
        (owner_key, {"types": [0]}, grpc.StatusCode.INVALID_ARGUMENT, "types[0]"),
        (owner_key, {"types": [SUCCEEDED, 999]}, grpc.StatusCode.INVALID_ARGUMENT, "types[1]"),
        (stack.create_key(uid("no-events"), "payments:read"), {}, grpc.StatusCode.PERMISSION_DENIED, "events:read"),
    ]
    for key, options, code, mentioned in cases:
        collector = Collector(stack, key, reconnect=False, **options)
        wait_until(lambda c=collector: c.error, attempts=600, what=f"a refusal for {options}")  # type: ignore[misc]
        assert collector.error is not None and collector.error.code() == code, (options, collector.error)
        assert mentioned in (collector.error.details() or ""), collector.error.details()
        collector.stop()
    # The stack keeps serving: the owner's stream still works.
    again = Collector(stack, owner_key)
    try:
        assert again.wait_for(2)[0].event_id == my_first
    finally:
        again.stop()


@pytest.fixture
def lively_stack(tmp_path: Path) -> Iterator[Stack]:
    """Short heartbeats; two workers, each killed in turn by the test."""
    running = start_stack(tmp_path / "events", workers=2, extra_env={"PAYGATE_EVENTS_HEARTBEAT_S": "0.2"})
    yield running
    running.stop()


def test_heartbeats_and_a_killed_worker_lose_and_repeat_nothing(lively_stack: Stack) -> None:
    key = lively_stack.create_key(uid("events-kill"))
    collector = Collector(lively_stack, key)
    with lively_stack.client(*key) as client:
        user = funded(client, 1_000_000)
        bought = [purchase(client, user, 100) for _ in range(5)]
        collector.wait_for(12)
        for worker_id in ("worker-1", "worker-2"):  # whichever serves the stream dies once
            pid = lively_stack.worker_pid(worker_id)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            bought += [purchase_retrying(client, user) for _ in range(5)]
            wait_until(lambda: lively_stack.healthy_workers() == 2, attempts=600, what="the worker back")
        total = 2 + 2 * len(bought)
        events = collector.wait_for(total)
    collector.stop()
    assert len(events) == total
    assert len({e.event_id for e in events}) == total  # no event twice, none missing
    succeeded = [e.payment.payment_id for e in events if e.type == SUCCEEDED][1:]
    assert succeeded == [p.payment_id for p in bought]  # in commit order
    text = lively_stack.metrics_text()
    assert 'paygate_events_streamed_total{kind="heartbeat"}' in text


def purchase_retrying(client: PaygateClient, user: str) -> pb.Payment:
    """A purchase while a worker may be dying: retried with the same order id until it answers."""
    request = pb.CreatePaymentRequest(
        order_id=uid("o"), user_id=user, amount_minor=100, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
    )
    for _ in range(50):
        try:
            return client.create_payment(request)
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
                raise
            threading.Event().wait(0.1)
    raise AssertionError("the purchase never went through")


def test_webhook_endpoints_through_the_api(stack: Stack, owner_key: tuple[str, str], signed: PaygateClient) -> None:
    url = f"http://127.0.0.1:9/{uid('hooks')}"
    made = signed.create_webhook_endpoint(
        pb.CreateWebhookEndpointRequest(url=url, types=[SUCCEEDED, pb.EVENT_TYPE_REFUND_SUCCEEDED])
    )
    assert made.endpoint_id.startswith("we_") and made.secret.startswith("whsec_") and made.url == url
    assert list(made.types) == [SUCCEEDED, pb.EVENT_TYPE_REFUND_SUCCEEDED]
    (listed,) = signed.list_webhook_endpoints().endpoints
    assert listed.endpoint_id == made.endpoint_id and listed.secret == ""  # never shown again
    rotated = signed.rotate_webhook_endpoint_secret(
        pb.RotateWebhookEndpointSecretRequest(endpoint_id=made.endpoint_id, overlap_hours=2)
    )
    assert rotated.secret not in ("", made.secret) and rotated.HasField("previous_secret_expire_time")
    other = stack.client(*stack.create_key(uid("hooks-other")))
    refusals = [
        (lambda: signed.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url=url)), "ALREADY_EXISTS", "url"),
        (lambda: signed.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url="ftp://x/y")), "INVALID_ARGUMENT",
         "url"),
        (lambda: signed.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url=url + "x", types=[77])),
         "INVALID_ARGUMENT", "types[0]"),
        (lambda: other.delete_webhook_endpoint(pb.DeleteWebhookEndpointRequest(endpoint_id=made.endpoint_id)),
         "NOT_FOUND", made.endpoint_id),
        (lambda: signed.rotate_webhook_endpoint_secret(
            pb.RotateWebhookEndpointSecretRequest(endpoint_id=made.endpoint_id, overlap_hours=721)),
         "INVALID_ARGUMENT", "overlap_hours"),
    ]  # fmt: skip
    for call, code, mentioned in refusals:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code().name == code, refused.value
        assert mentioned in (refused.value.details() or "") or code == "ALREADY_EXISTS", refused.value.details()
    other.close()
    deleted = signed.delete_webhook_endpoint(pb.DeleteWebhookEndpointRequest(endpoint_id=made.endpoint_id))
    assert deleted.endpoint_id == made.endpoint_id
    assert list(signed.list_webhook_endpoints().endpoints) == []
    reader = stack.client(*stack.create_key(uid("hooks-reader"), "webhooks:read"))
    with pytest.raises(grpc.RpcError) as denied:
        reader.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url=url))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED and "webhooks:write" in (
        denied.value.details() or ""
    )
    reader.close()


def test_a_cancelled_stream_ends_on_the_worker_too(stack: Stack, owner_key: tuple[str, str]) -> None:
    """The gateway carries the caller's cancellation to the worker: its stream ends and stops being counted."""

    def streams_served() -> float:
        for line in stack.metrics_text().splitlines():
            if line.startswith("paygate_event_streams "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = streams_served()
    collectors = [Collector(stack, owner_key) for _ in range(3)]
    wait_until(lambda: streams_served() >= before + 3, attempts=600, what="three streams on the workers")
    for collector in collectors:
        collector.stop()  # the client cancels; nothing else ends these streams
    wait_until(lambda: streams_served() <= before, attempts=600, what="the workers' streams ended")
    assert all(c.error is None or c.error.code() == grpc.StatusCode.CANCELLED for c in collectors)
