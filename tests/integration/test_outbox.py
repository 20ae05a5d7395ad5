"""The transactional outbox (docs/events.md) on each database with real Redis: every state change writes its
event in its own transaction, numbered in commit order without gaps, and nothing else does."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from paygate.v1 import payment_gateway_pb2 as pb
from runtime import outbox
from runtime.db import Database
from runtime.errors import InsufficientFunds
from runtime.schema import event_sequence, events
from runtime.settings import Settings
from tests.support import Clock
from workers.codec import encode
from workers.domain.types import Caller, CreatePaymentCommand, Method, RefundCommand, TopUpCommand, TransferCommand
from workers.service import PaymentService
from workers.store import events as event_rows
from workers.wiring import build_service


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def caller() -> Caller:
    # An owner of its own per test: its events are exactly what the test did.
    return Caller(owner=uid("own"), key_id="key_e", request_id="req_e")


@pytest.fixture(params=[True, False], ids=["group-commit", "one-at-a-time"])
def service(
    request: pytest.FixtureRequest, database: Database, redis_url: str, redis_prefix: str
) -> Iterator[PaymentService]:
    settings = Settings(channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, platform_fee_bps=3000)
    built = build_service(settings, database, metrics=None, group_commit=request.param)
    yield built
    built.close()


def owner_events(database: Database, owner: str, after_seq: int = 0) -> list[tuple[int, pb.Event]]:
    with database.read() as connection:
        rows = event_rows.after(connection, owner, after_seq, limit=1000)
    return [(row.seq, pb.Event.FromString(row.payload)) for row in rows]


def types(found: list[tuple[int, pb.Event]]) -> list[str]:
    return [pb.EventType.Name(event.type) for _, event in found]


def funded(service: PaymentService, caller: Caller, amount: int) -> str:
    user = uid("u")
    service.top_up(caller, TopUpCommand(uid("t"), user, amount, "CNY", Method.SANDBOX))
    return user


def test_a_purchase_announces_its_creation_and_its_success(
    service: PaymentService, database: Database, caller: Caller
) -> None:
    user = funded(service, caller, 10_000)
    record = service.create_payment(caller, CreatePaymentCommand(uid("o"), user, 2_500, "CNY", Method.WALLET, "c1", ""))
    found = owner_events(database, caller.owner)
    assert types(found) == [
        "EVENT_TYPE_PAYMENT_CREATED",  # the top-up
        "EVENT_TYPE_PAYMENT_SUCCEEDED",
        "EVENT_TYPE_PAYMENT_CREATED",  # the purchase
        "EVENT_TYPE_PAYMENT_SUCCEEDED",
    ]
    seqs = [seq for seq, _ in found]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    purchase = [event for _, event in found[2:]]
    # The payload is the payment exactly as the RPC answered it; each event has its own stable id.
    assert all(event.payment == encode.payment(record) for event in purchase)
    assert purchase[0].event_id != purchase[1].event_id and all(e.event_id.startswith("evt_") for e in purchase)
    assert purchase[1].create_time.ToDatetime(tzinfo=UTC) == record.updated_at


def test_a_refused_purchase_announces_nothing(service: PaymentService, database: Database, caller: Caller) -> None:
    user = funded(service, caller, 100)
    before = owner_events(database, caller.owner)
    with pytest.raises(InsufficientFunds):
        service.create_payment(caller, CreatePaymentCommand(uid("o"), user, 101, "CNY", Method.WALLET, "c1", ""))
    assert owner_events(database, caller.owner) == before


def test_refunds_and_transfers_announce_themselves(service: PaymentService, database: Database, caller: Caller) -> None:
    user, other = funded(service, caller, 10_000), uid("u")
    bought = service.create_payment(caller, CreatePaymentCommand(uid("o"), user, 3_000, "CNY", Method.WALLET, "c", ""))
    mark = owner_events(database, caller.owner)[-1][0]
    refund = service.refund_payment(caller, RefundCommand(bought.payment_id, uid("r"), 1_000, "changed mind"))
    moved = service.transfer(caller, TransferCommand(uid("x"), user, other, 500, "CNY"))
    found = owner_events(database, caller.owner, after_seq=mark)
    assert types(found) == ["EVENT_TYPE_REFUND_CREATED", "EVENT_TYPE_REFUND_SUCCEEDED", "EVENT_TYPE_TRANSFER_SUCCEEDED"]
    assert found[0][1].refund == encode.refund(refund) == found[1][1].refund
    assert found[0][1].refund.payment_status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert found[2][1].transfer == encode.transfer(moved)


def test_other_owners_see_none_of_it(service: PaymentService, database: Database, caller: Caller) -> None:
    funded(service, caller, 1_000)
    stranger = uid("own")
    assert owner_events(database, stranger) == []
    first_id = owner_events(database, caller.owner)[0][1].event_id
    with database.read() as connection:
        assert event_rows.seq_of(connection, stranger, first_id) is None
        assert event_rows.seq_of(connection, caller.owner, first_id) is not None


def test_a_rolled_back_change_leaves_no_event_and_no_number(database: Database, caller: Caller) -> None:
    with database.read() as connection:
        last = event_rows.last_seq(connection)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), database.write() as connection:
        outbox.add(connection, _new_event(caller.owner))
        raise Boom
    with database.read() as connection:
        assert connection.execute(select(events.c.seq).where(events.c.owner == caller.owner)).first() is None
    # A later transaction takes the very next number: none was lost to the rollback.
    with database.write() as connection:
        outbox.add(connection, _new_event(caller.owner))
    found = owner_events(database, caller.owner)
    assert len(found) == 1 and found[0][0] > last


def test_an_event_outside_a_write_transaction_is_refused(database: Database, caller: Caller) -> None:
    with database.read() as connection, pytest.raises(outbox.OutsideTransaction):
        outbox.add(connection, _new_event(caller.owner))


def test_numbers_follow_commit_order_without_gaps_under_concurrent_writers(database: Database, caller: Caller) -> None:
    """Writers on several threads (and so, on a server, several connections committing at once) while a reader
    keeps reading: every read sees the numbers up to its highest, none missing."""
    with database.read() as connection:
        base = event_rows.last_seq(connection)
    stop = threading.Event()
    gaps: list[list[int]] = []

    def read() -> None:
        while not stop.is_set():
            with database.read() as connection:
                seen = connection.execute(select(events.c.seq).where(events.c.seq > base)).scalars().all()
            if seen and sorted(seen) != list(range(base + 1, max(seen) + 1)):
                gaps.append(sorted(seen))

    def write(n: int) -> None:
        for _ in range(n):
            with database.write() as connection:
                outbox.add(connection, _new_event(caller.owner))
                outbox.add(connection, _new_event(caller.owner))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(15,)) for _ in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert gaps == []
    found = owner_events(database, caller.owner)
    assert [seq for seq, _ in found] == sorted(seq for seq, _ in found)
    assert len(found) == 4 * 15 * 2
    with database.read() as connection:
        assert connection.execute(select(event_sequence.c.last_seq)).scalar_one() >= base + 120


def _new_event(owner: str) -> outbox.NewEvent:
    event_id = uid("evt")
    return outbox.NewEvent(
        event_id, owner, "EVENT_TYPE_TEST", datetime.now(UTC), pb.Event(event_id=event_id).SerializeToString()
    )


def test_a_channel_payment_announces_each_step_and_late_money(
    database: Database, redis_url: str, redis_prefix: str, caller: Caller
) -> None:
    """Through a channel (the sandbox, confirming later): PENDING is only CREATED; the confirmation, the expiry
    and money that arrives after the expiry each announce themselves."""
    clock = Clock()
    settings = Settings(
        channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, sandbox_confirmation="deferred"
    )
    service = build_service(settings, database, metrics=None, clock=clock)
    try:
        user = uid("u")
        paid = service.top_up(caller, TopUpCommand(uid("t"), user, 700, "CNY", Method.SANDBOX))
        stale = service.top_up(caller, TopUpCommand(uid("t"), user, 500, "CNY", Method.SANDBOX))
        assert types(owner_events(database, caller.owner)) == ["EVENT_TYPE_PAYMENT_CREATED"] * 2
        mark = owner_events(database, caller.owner)[-1][0]
        confirmed = service.confirm_payment(paid.payment_id)
        clock.now += timedelta(seconds=901)
        assert service.close_expired(ttl_s=900) >= 1
        late = service.confirm_payment(stale.payment_id)
        found = owner_events(database, caller.owner, after_seq=mark)
        assert types(found) == [
            "EVENT_TYPE_PAYMENT_SUCCEEDED",
            "EVENT_TYPE_PAYMENT_CLOSED",
            "EVENT_TYPE_PAYMENT_LATE_REFUNDED",
            "EVENT_TYPE_REFUND_CREATED",
            "EVENT_TYPE_REFUND_SUCCEEDED",
        ]
        assert found[0][1].payment == encode.payment(confirmed)
        assert found[1][1].payment.payment_id == stale.payment_id
        assert found[1][1].payment.status == pb.PAYMENT_STATUS_CLOSED
        assert found[2][1].refund.payment_id == stale.payment_id and found[2][1].refund.amount_minor == 500
        assert late.refunded_minor == 500
        # A repeated confirmation changes nothing, so it announces nothing.
        service.confirm_payment(stale.payment_id)
        assert owner_events(database, caller.owner, after_seq=found[-1][0]) == []
    finally:
        service.close()
