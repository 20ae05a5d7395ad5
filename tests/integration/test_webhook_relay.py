"""The webhook relay (workers/webhooks/, docs/events.md) on each database, with real Redis and a real HTTP receiver
on loopback: order, signatures, retries on a schedule, dead letters, the lease, the cursor guard, rotation."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paygate.v1 import payment_gateway_pb2 as pb
from paygate.webhooks import verify_webhook
from runtime import outbox
from runtime.db import Database
from runtime.errors import InvalidArgument, NotFound
from runtime.master_key import MasterKeyRing
from runtime.settings import Settings
from tests.support import Clock
from tests.webhook_receiver import Receiver
from workers.store import webhooks as rows
from workers.webhooks.endpoints import Endpoints
from workers.webhooks.redeliver import redeliver
from workers.webhooks.relay import RELAY_LEASE, Relay
from workers.wiring import build_service


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def parts(database: Database, redis_url: str, redis_prefix: str) -> Iterator[tuple[Endpoints, Relay, Clock, Any]]:
    settings = Settings(channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix)
    service = build_service(settings, database, metrics=None, group_commit=False)
    endpoints = Endpoints(database, MasterKeyRing(os.urandom(32)), require_https=False)
    clock = Clock()
    relay = Relay(database, service.locks, endpoints, None, schedule_s=(10, 20), clock=clock)
    yield endpoints, relay, clock, service
    relay.close()
    service.close()


def emit(database: Database, owner: str, kind: int = pb.EVENT_TYPE_PAYMENT_SUCCEEDED) -> str:
    event_id = uid("evt")
    stamp = Timestamp()
    stamp.GetCurrentTime()
    event = pb.Event(event_id=event_id, type=kind, create_time=stamp, payment=pb.Payment(payment_id=uid("pay")))
    name = pb.EventType.Name(kind)
    with database.write() as connection:
        outbox.add(connection, outbox.NewEvent(event_id, owner, name, datetime.now(UTC), event.SerializeToString()))
    return event_id


def test_events_arrive_signed_in_order_once(database: Database, parts: Any, receiver: Receiver) -> None:
    endpoints, relay, clock, _ = parts
    owner = uid("own")
    emit(database, owner)  # before the endpoint existed: not sent
    made = endpoints.add(owner, receiver.url, [], clock())
    ids = [emit(database, owner) for _ in range(5)]
    emit(database, uid("stranger"))  # another owner's
    assert relay.round() == 5
    assert relay.round() == 0  # nothing twice
    events = receiver.events([made.secret])
    assert [e["eventId"] for e in events] == ids
    assert all(e["type"] == "EVENT_TYPE_PAYMENT_SUCCEEDED" and "payment" in e for e in events)
    headers = receiver.received[0][0]
    assert headers["Paygate-Event-Id"] == ids[0] and headers["Content-Type"] == "application/json"


def test_a_failing_receiver_is_retried_on_schedule_and_then_gets_everything_in_order(
    database: Database, parts: Any, receiver: Receiver
) -> None:
    endpoints, relay, clock, _ = parts
    owner = uid("own")
    made = endpoints.add(owner, receiver.url, [], clock())
    ids = [emit(database, owner) for _ in range(3)]
    receiver.status = 503
    assert relay.round() == 0
    assert len(receiver.received) == 1  # the head waits; the rest wait behind it
    (endpoint,) = endpoints.of_owner(owner)
    assert endpoint.attempts == 1 and endpoint.next_attempt_at is not None and "503" in endpoint.last_error
    assert relay.round() == 0 and len(receiver.received) == 1  # backing off: not before its time
    receiver.status = 200
    clock.now += timedelta(seconds=13)  # past the first delay (10 s, jitter at most 20 %)
    assert relay.round() == 3
    delivered = receiver.events([made.secret])
    assert [e["eventId"] for e in delivered] == [ids[0], *ids]  # the failed attempt, then all in order


def test_an_event_never_accepted_is_dead_lettered_and_can_be_redelivered(
    database: Database, parts: Any, receiver: Receiver
) -> None:
    endpoints, relay, clock, _ = parts
    owner = uid("own")
    made = endpoints.add(owner, receiver.url, [], clock())
    doomed, after = emit(database, owner), emit(database, owner)
    receiver.status = 500
    for _ in range(3):  # the first attempt and the schedule's two retries
        relay.round()
        clock.now += timedelta(seconds=25)
    receiver.status = 200
    relay.round()
    with database.read() as connection:
        (letter,) = rows.dead_letters_of(connection, owner)
    assert letter.event_id == doomed and letter.attempts == 3 and letter.redelivered_at is None
    assert receiver.received[-1][0]["Paygate-Event-Id"] == after  # the endpoint moved on
    outcomes = redeliver(database, endpoints, doomed, clock=clock)
    assert [(e, a.ok) for e, a in outcomes] == [(made.endpoint.endpoint_id, True)]
    assert receiver.events([made.secret])[-1]["eventId"] == doomed
    with database.read() as connection:
        assert rows.dead_letters_of(connection, owner)[0].redelivered_at is not None
    with pytest.raises(NotFound):
        redeliver(database, endpoints, "evt_" + "0" * 26, clock=clock)


def test_one_relay_at_a_time_and_a_stale_one_cannot_move_the_cursor(
    database: Database, parts: Any, receiver: Receiver
) -> None:
    endpoints, relay, clock, service = parts
    owner = uid("own")
    endpoints.add(owner, receiver.url, [], clock())
    first = emit(database, owner)
    held = service.locks.try_acquire(RELAY_LEASE, lease_ms=10_000)
    assert held is not None
    try:
        assert relay.round() == 0 and receiver.received == []  # another process holds the relay's lease
    finally:
        service.locks.release(held)
    (stale,) = endpoints.of_owner(owner)  # what a paused relay read before the round below
    assert relay.round() == 1
    with database.write() as connection:
        assert not rows.relay_advance(connection, stale, stale.cursor_seq + 1)  # guarded by the cursor it read
        assert not rows.relay_failed(connection, stale, 1, clock(), "late")
    (current,) = endpoints.of_owner(owner)
    assert current.cursor_seq > stale.cursor_seq and current.attempts == 0
    assert receiver.received[0][0]["Paygate-Event-Id"] == first


def test_types_filter_and_rotation_signs_with_both_secrets_until_the_old_expires(
    database: Database, parts: Any, receiver: Receiver
) -> None:
    endpoints, relay, clock, _ = parts
    owner = uid("own")
    made = endpoints.add(owner, receiver.url, ["EVENT_TYPE_REFUND_SUCCEEDED"], clock())
    emit(database, owner, pb.EVENT_TYPE_PAYMENT_SUCCEEDED)  # not wanted
    emit(database, owner, pb.EVENT_TYPE_REFUND_SUCCEEDED)
    rotated = endpoints.rotate(owner, made.endpoint.endpoint_id, clock(), overlap=timedelta(hours=1))
    assert relay.round() == 1
    header = receiver.received[0][0]["Paygate-Signature"]
    assert header.count("v1=") == 2
    assert receiver.events([made.secret]) == receiver.events([rotated.secret])  # either secret verifies
    clock.now += timedelta(hours=2)
    emit(database, owner, pb.EVENT_TYPE_REFUND_SUCCEEDED)
    assert relay.round() == 1
    assert receiver.received[1][0]["Paygate-Signature"].count("v1=") == 1
    verify_webhook(*receiver.received[1], [rotated.secret])


def test_endpoints_refuse_bad_urls_and_types(parts: Any) -> None:
    endpoints, _, clock, _ = parts
    for url in ["", "ftp://x/y", "http:///nohost", "http://user:pw@host/x", "http://host/a b", "https://h/\u00e9"]:
        with pytest.raises(InvalidArgument):
            endpoints.add(uid("own"), url, [], clock())
    with pytest.raises(InvalidArgument):
        endpoints.add(uid("own"), "https://example.test/h", ["EVENT_TYPE_NOPE"], clock())
    strict = Endpoints(endpoints._db, MasterKeyRing(os.urandom(32)), require_https=True)
    with pytest.raises(InvalidArgument, match="https"):
        strict.add(uid("own"), "http://example.test/h", [], clock())
    assert json.dumps(strict.add(uid("own"), "https://example.test/h", [], clock()).endpoint.url)
