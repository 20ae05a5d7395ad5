"""Reconciliation (docs/reconciliation.md): the pure matcher with every kind of difference and the midnight rule;
then, on each database, our records as the store finds them, a stored run read back, and corrections that post one
balanced entry, keep `ledger verify` green and are refused the second time."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select

from paygate.v1 import payment_gateway_pb2 as pb
from runtime import audit
from runtime.audit_verify import entries
from runtime.db import Database
from runtime.ids import new_id
from runtime.schema import journal_entries, postings
from tests.support import private_database
from workers.channels.base import NotificationKind, StatementLine
from workers.domain.types import (
    AccountKind,
    AttemptRecord,
    AttemptStatus,
    Method,
    PaymentRecord,
    PaymentStatus,
    PaymentType,
    RefundRecord,
    RefundStatus,
)
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.ledger.verify import verify
from workers.operations import money
from workers.reconciliation.fetch import CHINA, provider_day
from workers.reconciliation.match import ItemKind, Local, match, reference
from workers.reconciliation.run import CORRECTION, NotCorrectable, clearing_change, correct
from workers.store import attempts, records
from workers.store import events as event_rows
from workers.store import reconciliation as store

PAYMENT, REFUND = NotificationKind.PAYMENT, NotificationKind.REFUND
DAY = date(2031, 3, 14)
WINDOW = provider_day(Method.ALIPAY, DAY)
OWNER = "recon-tests"
OPERATOR = "cli:recon-operator"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A Beijing wall-clock time as the UTC instant our records carry."""
    return datetime.combine(day, time(hour, minute), CHINA).astimezone(UTC)


def line(ref: str, amount: int, when: datetime, status: str = "TRADE_SUCCESS", refund_of: str = "") -> StatementLine:
    if refund_of:
        return StatementLine(REFUND, refund_of, "T" + ref, ref, amount, "CNY", status, when)
    return StatementLine(PAYMENT, ref, "T" + ref, "", amount, "CNY", status, when)


def local(ref: str, amount: int, when: datetime, status: str = "succeeded", refund_of: str = "") -> Local:
    if refund_of:
        return Local(REFUND, ref, refund_of, amount, "CNY", status, when)
    return Local(PAYMENT, ref, ref, amount, "CNY", status, when)


def kinds(lines: list[StatementLine], ours: list[Local]) -> dict[str, str]:
    return {item.reference: item.kind.value for item in match(lines, ours, WINDOW).items}


# -- the matcher ------------------------------------------------------------------------------------------------


def test_the_provider_day_is_beijings_for_alipay_and_utcs_for_card() -> None:
    assert WINDOW.start == datetime(2031, 3, 13, 16, 0, tzinfo=UTC)
    assert provider_day(Method.CARD, DAY).start == datetime(2031, 3, 14, tzinfo=UTC)
    assert WINDOW.end - WINDOW.start == timedelta(days=1)


def test_a_statement_that_agrees_matches_everything() -> None:
    noon = at(DAY, 12)
    lines = [line("A", 1000, noon), line("R1", 300, noon, "REFUND_SUCCESS", refund_of="A")]
    ours = [
        local("A", 1000, noon),
        local("R1", 300, noon, refund_of="A"),
        local("old", 5, at(DAY, 0) - timedelta(days=2)),
    ]
    outcome = match(lines, ours, WINDOW)
    assert (outcome.lines, outcome.matched, outcome.items) == (2, 2, ())


def test_each_kind_of_difference_is_reported_with_what_each_side_counts_as_settled() -> None:
    noon = at(DAY, 12)
    lines = [
        line("ghost", 100, noon),
        line("short", 501, noon),
        line("closed-here", 700, noon),
        line("closed-there", 800, noon, status="TRADE_CLOSED"),
        line("twice", 900, noon),
        line("twice", 900, noon),
    ]
    ours = [
        local("short", 500, noon),
        local("closed-here", 700, noon, status="closed"),
        local("closed-there", 800, noon),
        local("twice", 900, noon),
        local("unlisted", 400, noon),
        local("R9", 60, noon, refund_of="x"),
    ]
    outcome = match(lines, ours, WINDOW)
    found = {(item.kind, item.reference): (item.ours_minor, item.theirs_minor) for item in outcome.items}
    assert found == {
        (ItemKind.MISSING_LOCALLY, "ghost"): (None, 100),
        (ItemKind.AMOUNT_DIFFERS, "short"): (500, 501),
        (ItemKind.STATUS_DIFFERS, "closed-here"): (None, 700),
        (ItemKind.STATUS_DIFFERS, "closed-there"): (800, None),
        (ItemKind.DUPLICATE_AT_CHANNEL, "twice"): (900, 1800),
        (ItemKind.MISSING_AT_CHANNEL, "unlisted"): (400, None),
        (ItemKind.MISSING_AT_CHANNEL, "R9"): (60, None),
    }
    assert (outcome.lines, outcome.matched) == (6, 0)
    by_ref = {item.reference: item for item in outcome.items}
    assert [by_ref[r].difference_minor for r in ("ghost", "short", "closed-there", "twice", "unlisted")] == [
        100,
        1,
        -800,
        900,
        -400,
    ]
    assert by_ref["R9"].record is REFUND and by_ref["R9"].out_trade_no == "x"


def test_a_line_both_sides_call_unsettled_matches() -> None:
    noon = at(DAY, 12)
    assert kinds([line("gone", 100, noon, status="TRADE_CLOSED")], [local("gone", 100, noon, status="closed")]) == {}


def test_the_midnight_rule_matches_a_neighbouring_day_but_not_a_distant_one() -> None:
    last_second = WINDOW.end - timedelta(seconds=1)
    lines = [line("late", 100, last_second), line("early", 200, WINDOW.start), line("far", 300, last_second)]
    ours = [
        local("late", 100, WINDOW.end + timedelta(minutes=3)),  # our clock put it after midnight
        local("early", 200, WINDOW.start - timedelta(seconds=2)),  # ... or before it
        local("far", 300, WINDOW.end + timedelta(days=3)),
    ]
    assert kinds(lines, ours) == {"far": "missing_locally"}


def test_missing_at_channel_near_midnight_says_where_to_look() -> None:
    ours = [local("edge", 100, WINDOW.end - timedelta(minutes=1)), local("mid", 100, at(DAY, 12))]
    items = {item.reference: item.detail for item in match([], ours, WINDOW).items}
    assert "next day's statement" in items["edge"]
    assert "near midnight" not in items["mid"] and "not listed" in items["mid"]


def test_the_correction_moves_clearing_toward_the_provider() -> None:
    noon = at(DAY, 12)
    by_ref = {
        item.reference: item
        for item in match(
            [line("ghost", 100, noon), line("R2", 70, noon, "REFUND_SUCCESS", refund_of="A")],
            [local("R1", 30, noon, refund_of="A")],
            WINDOW,
        ).items
    }

    def wrap(ref: str) -> store.StoredItem:
        return store.StoredItem("i", "r", "alipay", DAY, by_ref[ref])

    assert clearing_change(wrap("ghost")) == -100  # the provider holds money we never recorded: owed to us
    assert clearing_change(wrap("R2")) == 70  # it paid out a refund we never recorded
    assert clearing_change(wrap("R1")) == -30  # we recorded a refund it never paid


# -- on each database -------------------------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def recon_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A database of our own: every run reads all of a channel's records of a day, so no other test's rows."""
    server = None if request.param == "sqlite" else str(request.getfixturevalue(f"{request.param}_url"))
    with private_database(server, tmp_path_factory.mktemp("recon")) as database:
        audit.enable(database, audit.ChainKey(secrets.token_bytes(32)))  # corrections are audited
        yield database


def paid(
    db: Database, amount: int, when: datetime, method: Method = Method.ALIPAY, settled: bool = True
) -> PaymentRecord:
    """A top-up through a channel as the confirmation writes it: the attempt, and when it succeeded, the money in."""
    tag = uuid.uuid4().hex[:10]
    payment = PaymentRecord(
        new_id("pay"), OWNER, f"o-{tag}", PaymentType.TOP_UP, f"u-{tag}", "", amount, "CNY", method,
        PaymentStatus.PENDING, 0, "", "", None, when, when,
    )  # fmt: skip
    attempt = AttemptRecord(
        new_id("att", separator=""), payment.payment_id, OWNER, method,
        AttemptStatus.SUCCEEDED if settled else AttemptStatus.CLOSED, "qr", "", amount, "CNY", "T" + tag, "", "", "",
        "", when, when, None, 0,
    )  # fmt: skip
    with db.write() as connection:
        records.insert_payment(connection, payment)
        attempts.insert(connection, attempt)
        if settled:
            entry = Entry("top_up", OWNER, payment.payment_id, payment.payment_id, "CNY", when)
            with move(connection, money.money_in(connection, payment, when), entry) as entry_id:
                assert records.transition_payment(
                    connection, OWNER, payment.payment_id, expected=PaymentStatus.PENDING,
                    new=PaymentStatus.SUCCEEDED, entry_id=entry_id, failure_reason="", refunded_minor=0, now=when,
                )  # fmt: skip
    return replace(
        payment, status=PaymentStatus.SUCCEEDED if settled else payment.status, attempt_id=attempt.attempt_id
    )


def refunded(db: Database, payment: PaymentRecord, amount: int, when: datetime) -> str:
    """A refund through the channel that the provider confirmed: from the wallet back to the channel."""
    out_refund_no = new_id("rfd", separator="")
    with db.write() as connection:
        wallet = accounts.ensure_account(connection, AccountKind.WALLET, payment.user_id, "CNY", when)
        clearing = accounts.ensure_account(connection, AccountKind.CLEARING, payment.method.value, "CNY", when)
        entry = Entry("refund", OWNER, payment.payment_id, out_refund_no, "CNY", when)
        with move(connection, [BalanceChange(wallet, -amount), BalanceChange(clearing, amount)], entry) as entry_id:
            records.insert_refund(
                connection, OWNER,
                RefundRecord(out_refund_no, payment.payment_id, amount, "CNY", 0, 0, "test", entry_id, when,
                             PaymentStatus.PARTIALLY_REFUNDED, status=RefundStatus.SUCCEEDED,
                             out_refund_no=out_refund_no),
            )  # fmt: skip
            current = records.payment_by_id(connection, OWNER, payment.payment_id)
            assert current is not None
            assert records.record_refund_on_payment(
                connection, current, new_status=PaymentStatus.PARTIALLY_REFUNDED,
                new_refunded_minor=current.refunded_minor + amount, now=when,
            )  # fmt: skip
    return out_refund_no


def stored_run(db: Database, day: date, lines: list[StatementLine]) -> store.Run:
    """What `reconcile` does after the statement is fetched: find our records, match, store; read it back."""
    window = provider_day(Method.ALIPAY, day)
    with db.read() as connection:
        ours = store.records_for(connection, Method.ALIPAY, window, {reference(x) for x in lines})
    outcome = match(lines, ours, window)
    run_id = new_id("rcn")
    items = tuple(store.StoredItem(new_id("rci"), run_id, "alipay", day, item) for item in outcome.items)
    run = store.Run(run_id, "alipay", day, at(day, 23), at(day, 23), outcome.lines, outcome.matched, items)
    with db.write() as connection:
        store.insert_run(connection, run)
    with db.read() as connection:
        loaded = store.run_by_id(connection, run_id)
    assert loaded is not None
    assert loaded == replace(run, items=tuple(sorted(run.items, key=lambda s: s.item_id)))
    return loaded


def test_the_store_finds_the_days_records_and_the_listed_ones(recon_db: Database) -> None:
    day = date(2031, 4, 1)
    a = paid(recon_db, 1000, at(day, 9))
    b = paid(recon_db, 500, at(day, 10))
    c = paid(recon_db, 250, at(day, 11))
    after_midnight = paid(recon_db, 120, at(day + timedelta(days=1), 0, 3))
    closed = paid(recon_db, 700, at(day, 12), settled=False)
    paid(recon_db, 999, at(day, 12), method=Method.WECHAT_PAY)  # another channel: not in alipay's run
    paid(recon_db, 888, at(day, 12) - timedelta(days=3))  # another day, not listed: not in this run
    r1 = refunded(recon_db, a, 300, at(day, 15))
    r2 = refunded(recon_db, b, 200, at(day, 16))
    lines = [
        line(a.attempt_id or "", 1000, at(day, 9)),
        line(b.attempt_id or "", 501, at(day, 10)),
        line(after_midnight.attempt_id or "", 120, at(day, 23, 59)),
        line(closed.attempt_id or "", 700, at(day, 12)),
        line("GHOST" + uuid.uuid4().hex[:8], 100, at(day, 12)),
        line(r1, 300, at(day, 15), "REFUND_SUCCESS", refund_of=a.attempt_id or ""),
    ]
    run = stored_run(recon_db, day, lines)
    found = {(s.item.kind, s.item.reference) for s in run.items}
    assert found == {
        (ItemKind.AMOUNT_DIFFERS, b.attempt_id),
        (ItemKind.MISSING_AT_CHANNEL, c.attempt_id),
        (ItemKind.STATUS_DIFFERS, closed.attempt_id),
        (ItemKind.MISSING_LOCALLY, lines[4].out_trade_no),
        (ItemKind.MISSING_AT_CHANNEL, r2),
    }
    assert (run.lines, run.matched, run.unmatched) == (6, 3, 5)
    missing_refund = next(s.item for s in run.items if s.item.reference == r2)
    assert (missing_refund.record, missing_refund.out_trade_no, missing_refund.ours_minor) == (
        REFUND,
        b.attempt_id,
        200,
    )
    # Each difference about one of the owner's payments or refunds is the owner's event (docs/events.md); the
    # ghost (no record of ours, so no owner) is only in the run's report.
    with recon_db.read() as connection:
        stored = event_rows.after(
            connection, OWNER, 0, types=frozenset({"EVENT_TYPE_RECONCILIATION_MISMATCH"}), limit=500
        )
    mismatches = [pb.Event.FromString(e.payload).mismatch for e in stored]
    announced = {(m.item_id, m.kind, m.payment_id, m.refund_id) for m in mismatches if m.run_id == run.run_id}
    by_reference = {s.item.reference: s for s in run.items}
    assert announced == {
        (by_reference[b.attempt_id or ""].item_id, "amount_differs", b.payment_id, ""),
        (by_reference[c.attempt_id or ""].item_id, "missing_at_channel", c.payment_id, ""),
        (by_reference[closed.attempt_id or ""].item_id, "status_differs", closed.payment_id, ""),
        (by_reference[r2].item_id, "missing_at_channel", b.payment_id, r2),
    }


def clearing_and_suspense(db: Database) -> tuple[int, int]:
    with db.read() as connection:
        found = [
            accounts.find_account(connection, kind, "alipay", "CNY")
            for kind in (AccountKind.CLEARING, AccountKind.SUSPENSE)
        ]
    return tuple(0 if a is None else a.balance_minor for a in found)  # type: ignore[return-value]


def entries_for(db: Database, item_id: str) -> list[tuple[str, int]]:
    with db.read() as connection:
        query = (
            select(journal_entries.c.kind, postings.c.amount_minor)
            .join(postings, postings.c.entry_id == journal_entries.c.entry_id)
            .where(journal_entries.c.reference_id == item_id)
        )
        return [(row.kind, row.amount_minor) for row in connection.execute(query)]


def test_a_correction_posts_one_balanced_entry_and_only_once(recon_db: Database) -> None:
    day = date(2031, 4, 2)
    short = paid(recon_db, 500, at(day, 10))
    run = stored_run(
        recon_db,
        day,
        [line(short.attempt_id or "", 530, at(day, 10)), line("GHOST-" + uuid.uuid4().hex[:6], 90, at(day, 11))],
    )
    by_kind = {s.item.kind: s for s in run.items}
    before = clearing_and_suspense(recon_db)

    done = correct(
        recon_db,
        by_kind[ItemKind.AMOUNT_DIFFERS].item_id,
        "processor fee booked twice",
        at(day + timedelta(days=1), 11),
        actor=OPERATOR,
    )
    assert done.clearing_minor == -30
    postings_of = entries_for(recon_db, done.item_id)
    assert sorted(postings_of) == [(CORRECTION, -30), (CORRECTION, 30)]
    assert clearing_and_suspense(recon_db) == (before[0] - 30, before[1] + 30)

    with pytest.raises(NotCorrectable, match="already"):
        correct(recon_db, done.item_id, "again", at(day + timedelta(days=1), 12), actor=OPERATOR)
    assert len(entries_for(recon_db, done.item_id)) == 2  # nothing more was posted
    # One audit entry, of the correction that posted; the refused one left none.
    (audited,) = [e for e in entries(recon_db, action="reconcile.correct") if e.subject == done.item_id]
    assert (audited.actor, audited.details["entry_id"], audited.details["clearing_minor"]) == (
        OPERATOR,
        done.entry_id,
        -30,
    )
    assert audited.details["reason"] == "processor fee booked twice"
    with recon_db.read() as connection:
        resolved = store.item_by_id(connection, done.item_id)
    assert resolved is not None and resolved.correction_entry_id == done.entry_id
    assert resolved.resolution == "processor fee booked twice" and resolved.resolved_at is not None

    ghost = by_kind[ItemKind.MISSING_LOCALLY]
    ghost_done = correct(recon_db, ghost.item_id, "unknown payer, held in suspense", at(day, 23), actor=OPERATOR)
    assert ghost_done.clearing_minor == -90
    report = verify(recon_db)
    assert report.ok, report.render()


def test_corrections_need_a_reason_a_difference_and_an_item(recon_db: Database) -> None:
    day = date(2031, 4, 3)
    gone = paid(recon_db, 400, at(day, 10), settled=False)
    run = stored_run(
        recon_db,
        day,
        [
            line("NOPE" + uuid.uuid4().hex[:6], 400, at(day, 10), status="TRADE_CLOSED"),
            line(gone.attempt_id or "", 400, at(day, 10)),
        ],
    )
    unsettled = next(s for s in run.items if s.item.kind is ItemKind.MISSING_LOCALLY)
    assert unsettled.item.difference_minor == 0
    with pytest.raises(NotCorrectable, match="no difference"):
        correct(recon_db, unsettled.item_id, "nothing moved", at(day, 23), actor=OPERATOR)
    status = next(s for s in run.items if s.item.kind is ItemKind.STATUS_DIFFERS)
    with pytest.raises(NotCorrectable, match="reason"):
        correct(recon_db, status.item_id, "   ", at(day, 23), actor=OPERATOR)
    with pytest.raises(NotCorrectable, match="no reconciliation item"):
        correct(recon_db, "rci_nothing", "why", at(day, 23), actor=OPERATOR)
    assert entries_for(recon_db, status.item_id) == [] and entries_for(recon_db, unsettled.item_id) == []


def test_two_concurrent_corrections_of_one_item_post_one_entry(recon_db: Database) -> None:
    day = date(2031, 4, 4)
    run = stored_run(recon_db, day, [line("RACE" + uuid.uuid4().hex[:6], 250, at(day, 10))])
    item_id = run.items[0].item_id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            outcomes.append(correct(recon_db, item_id, "race", at(day, 23), actor=OPERATOR).entry_id)
        except NotCorrectable:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcome == "refused" for outcome in outcomes) == [False, True]
    assert sorted(entries_for(recon_db, item_id)) == [(CORRECTION, -250), (CORRECTION, 250)]
    assert verify(recon_db).ok


def test_a_run_without_differences_is_stored_too(recon_db: Database) -> None:
    day = date(2031, 4, 5)
    one = paid(recon_db, 100, at(day, 8))
    run = stored_run(recon_db, day, [line(one.attempt_id or "", 100, at(day, 8))])
    assert (run.lines, run.matched, run.unmatched, run.items) == (1, 1, 0, ())
