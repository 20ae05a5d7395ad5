"""The risk engine on a real database and a real Redis (docs/risk.md): velocity windows, DENY writing nothing,
REVIEW held then released (money moves once) or refused, a release and a refusal racing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from runtime.audit_verify import entries as audit_entries
from runtime.db import Database
from runtime.errors import IllegalTransition, PaygateError, RiskDenied
from runtime.schema import events as events_table
from runtime.schema import idempotency_records, journal_entries, payment_attempts, payments
from runtime.settings import Settings
from tests.support import Clock
from workers.domain.risk_context import RiskContext
from workers.domain.types import (
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    PaymentStatus,
    TopUpCommand,
)
from workers.service import PaymentService
from workers.store import records
from workers.wiring import build_service

CALLER = Caller(owner="orders", key_id="key_1", request_id="req_1")
HEAD = "version = 1\n[thresholds]\nreview_at = 0.5\ndeny_at = 0.9\n"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def blocklist(name: str, users: list[str], probability: str, operations: str = '["CreatePayment"]') -> str:
    listed = ", ".join(f'"{u}"' for u in users)
    return (
        f'[[rules]]\nname = "{name}"\nkind = "blocklist"\nusers = [{listed}]\nprobability = {probability}\n'
        f"operations = {operations}\n"
    )


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(HEAD)
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_service(
    database: Database, redis_url: str, redis_prefix: str, tmp_path: Path, rules_path: Path, clock: Clock
) -> Iterator[object]:
    built: list[PaymentService] = []

    def make(rules: str) -> PaymentService:
        rules_path.write_text(HEAD + rules)
        settings = Settings(
            data_dir=tmp_path,
            channel_sim_listen="",
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            lock_wait_ms=5000,
            risk_rules=str(rules_path),
        )
        service = build_service(settings, database, metrics=None, clock=clock)
        built.append(service)
        return service

    yield make
    for service in built:
        service.close()


def funded(service: PaymentService, amount: int = 10_000, user: str = "") -> str:
    user = user or uid("u")
    service.top_up(CALLER, TopUpCommand(uid("o"), user, amount, "CNY", Method.SANDBOX))
    return user


def purchase(user: str, amount: int, order: str | None = None, **risk: str) -> CreatePaymentCommand:
    return CreatePaymentCommand(
        order or uid("o"), user, amount, "CNY", Method.WALLET, "", "course", risk=RiskContext(**risk)
    )


def balance(service: PaymentService, user: str) -> int:
    return service.get_balance(BalanceQuery(user, "CNY"))


def counts(database: Database) -> tuple[int, ...]:
    with database.read() as connection:
        return tuple(
            connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (payments, journal_entries, idempotency_records, payment_attempts, events_table)
        )


def test_velocity_counts_each_order_once_within_a_sliding_window(make_service, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    service = make_service(
        '[[rules]]\nname = "three-a-minute"\nkind = "velocity_count"\nwindow_s = 60\nmax_count = 2\nprobability = 1\n'
    )
    user = funded(service)  # the top-up is the first payment the window counts
    first = service.create_payment(CALLER, purchase(user, 100, order="first-" + user))
    assert first.status is PaymentStatus.SUCCEEDED
    # The same order id again is a replay: answered from its record, and not counted a second time.
    assert service.create_payment(CALLER, purchase(user, 100, order="first-" + user)) == first
    with pytest.raises(RiskDenied) as denied:
        service.create_payment(CALLER, purchase(user, 100))
    assert denied.value.metadata == {"rules": "three-a-minute", "score": "1"}
    clock.now += timedelta(seconds=61)  # the window slides past all three
    assert service.create_payment(CALLER, purchase(user, 100)).status is PaymentStatus.SUCCEEDED


def test_velocity_amount_is_summed_per_currency(make_service) -> None:  # type: ignore[no-untyped-def]
    service = make_service(
        '[[rules]]\nname = "cny-day"\nkind = "velocity_amount"\nwindow_s = 86400\ncurrency = "CNY"\n'
        "max_amount_minor = 10500\nprobability = 0.95\n"
    )
    user = funded(service, 10_000)
    assert service.create_payment(CALLER, purchase(user, 500)).status is PaymentStatus.SUCCEEDED
    with pytest.raises(RiskDenied, match="cny-day"):
        service.create_payment(CALLER, purchase(user, 1))


def test_deny_writes_nothing_and_the_order_id_is_assessed_again_later(  # type: ignore[no-untyped-def]
    make_service, database: Database, rules_path: Path
) -> None:
    user = uid("u")
    service = make_service(blocklist("blocked-users", [user], "1"))  # purchases only: the top-up goes through
    funded_user = user
    service.top_up(CALLER, TopUpCommand(uid("o"), funded_user, 10_000, "CNY", Method.SANDBOX))
    order = uid("o")
    before = counts(database)
    with pytest.raises(RiskDenied) as refused:
        service.create_payment(CALLER, purchase(user, 700, order=order))
    assert refused.value.metadata["rules"] == "blocked-users"
    assert counts(database) == before  # no payment, entry, idempotency record, attempt or event
    assert balance(service, user) == 10_000

    rules_path.write_text(HEAD)  # the rules change: the same order id is assessed again, and now allowed
    engine = service.context.risk
    assert engine is not None
    assert engine.check_for_changes() == 1  # the worker's background job does this once a second
    assert engine.check_for_changes() == 0  # once per change
    allowed = service.create_payment(CALLER, purchase(user, 700, order=order))
    assert allowed.order_id == order
    assert balance(service, user) == 9_300


def test_review_holds_then_release_moves_the_money_once(make_service, database: Database) -> None:  # type: ignore[no-untyped-def]
    service = make_service(
        '[[rules]]\nname = "big"\nkind = "amount_limit"\ncurrency = "CNY"\nmax_amount_minor = 1000\nprobability = 0.6\n'
        'operations = ["CreatePayment"]\n'
        '[[rules]]\nname = "region"\nkind = "region_mismatch"\nregions = { US = ["USD"] }\nprobability = 0.6\n'
    )
    user = funded(service)
    order = uid("o")
    held = service.create_payment(CALLER, purchase(user, 2_000, order=order, region="US"))
    assert (held.status, held.risk_decision, held.risk_score, held.risk_reasons) == (
        PaymentStatus.IN_REVIEW,
        "review",
        "0.84",
        "big,region",
    )
    assert held.entry_id is None and balance(service, user) == 10_000
    # A repeated call answers the held payment; it is not assessed or held twice.
    assert service.create_payment(CALLER, purchase(user, 2_000, order=order, region="US")).payment_id == held.payment_id
    released = service.release_review(held.payment_id, "called the learner", "cli:tester")
    assert released.status is PaymentStatus.SUCCEEDED and released.entry_id
    assert balance(service, user) == 8_000
    with pytest.raises(IllegalTransition):
        service.release_review(held.payment_id, "again", "cli:tester")
    with pytest.raises(IllegalTransition):
        service.refuse_review(held.payment_id, "too late", "cli:tester")
    assert balance(service, user) == 8_000
    with database.read() as connection:
        kinds = connection.execute(
            select(events_table.c.type).where(events_table.c.owner == CALLER.owner).order_by(events_table.c.seq)
        ).scalars()
        mine = [kind for kind in kinds]
    assert mine[-4:] == [
        "EVENT_TYPE_PAYMENT_CREATED",
        "EVENT_TYPE_PAYMENT_IN_REVIEW",
        "EVENT_TYPE_PAYMENT_RELEASED",
        "EVENT_TYPE_PAYMENT_SUCCEEDED",
    ]
    # The decision is on record once, with who and why; the refused second decisions left nothing.
    decided = [e for e in audit_entries(database, action="risk.", limit=1000) if e.subject == held.payment_id]
    assert [(e.action, e.actor) for e in decided] == [("risk.review_release", "cli:tester")]
    assert decided[0].details["reason"] == "called the learner" and decided[0].details["rules"] == "big,region"


def test_refuse_fails_the_payment_with_the_reason_and_moves_nothing(make_service, database: Database) -> None:  # type: ignore[no-untyped-def]
    user = uid("u")
    service = make_service(blocklist("watch", [user], "0.7"))
    funded(service, user=user)
    held = service.create_payment(CALLER, purchase(user, 100))
    assert held.status is PaymentStatus.IN_REVIEW
    refused = service.refuse_review(held.payment_id, "stolen account", "cli:tester")
    assert refused.status is PaymentStatus.FAILED
    assert refused.failure_reason == "refused after risk review: stolen account"
    assert balance(service, user) == 10_000
    assert [p.payment_id for p in service.payments_in_review()].count(held.payment_id) == 0
    decided = [e for e in audit_entries(database, action="risk.", limit=1000) if e.subject == held.payment_id]
    assert [(e.action, e.details["reason"]) for e in decided] == [("risk.review_refuse", "stolen account")]


def test_a_release_and_a_refusal_racing_exactly_one_wins(make_service) -> None:  # type: ignore[no-untyped-def]
    user = uid("u")
    service = make_service(blocklist("watch", [user], "0.7"))
    funded(service, user=user)
    held = service.create_payment(CALLER, purchase(user, 1_000))
    outcomes: dict[str, object] = {}
    start = threading.Barrier(2)

    def decide(name: str, act) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            outcomes[name] = act(held.payment_id, name, "cli:tester").status
        except PaygateError as error:
            outcomes[name] = error

    threads = [
        threading.Thread(target=decide, args=("release", service.release_review)),
        threading.Thread(target=decide, args=("refuse", service.refuse_review)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, outcome in outcomes.items() if isinstance(outcome, PaymentStatus)]
    assert len(winners) == 1, outcomes
    loser = "refuse" if winners == ["release"] else "release"
    assert isinstance(outcomes[loser], IllegalTransition)
    assert balance(service, user) == (9_000 if winners == ["release"] else 10_000)


def test_a_channel_payment_in_review_contacts_no_provider_until_released(  # type: ignore[no-untyped-def]
    make_service, database: Database
) -> None:
    user = uid("u")
    service = make_service(blocklist("watch", [user], "0.7", operations='["TopUp"]'))
    held = service.top_up(CALLER, TopUpCommand(uid("o"), user, 5_000, "CNY", Method.SANDBOX))
    assert held.status is PaymentStatus.IN_REVIEW and held.attempt_id
    with database.read() as connection:
        attempt = connection.execute(
            select(payment_attempts.c.status).where(payment_attempts.c.attempt_id == held.attempt_id)
        ).scalar_one()
    assert attempt == "created"  # written, never sent
    assert balance(service, user) == 0
    released = service.release_review(held.payment_id, "known learner", "cli:tester")
    assert released.status is PaymentStatus.SUCCEEDED  # the sandbox confirms at once
    assert released.attempt_id != held.attempt_id
    assert balance(service, user) == 5_000


def test_a_payment_released_from_review_is_not_expired_by_its_old_creation_time(
    database: Database, redis_url: str, redis_prefix: str, tmp_path: Path, rules_path: Path, clock: Clock
) -> None:
    """Its time to be paid runs from the release (its first attempt), so the sweeper's query leaves it out — it
    must neither be closed early nor take a place in a round's LIMIT ahead of the payments really expired."""
    rules_path.write_text(
        HEAD + '[[rules]]\nname = "big"\nkind = "amount_limit"\ncurrency = "CNY"\nmax_amount_minor = 1000\n'
        'probability = 0.6\noperations = ["CreatePayment"]\n'
    )
    settings = Settings(
        data_dir=tmp_path,
        channel_sim_listen="",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        risk_rules=str(rules_path),
        sandbox_confirmation="deferred",  # a channel payment stays PENDING until confirmed or expired
    )
    service = build_service(settings, database, metrics=None, clock=clock)
    try:
        ttl_s = 900

        def sandbox_purchase(amount: int) -> str:
            command = CreatePaymentCommand(uid("o"), uid("u"), amount, "CNY", Method.SANDBOX, uid("c"), "course")
            return service.create_payment(CALLER, command).payment_id

        held = [sandbox_purchase(2_000) for _ in range(3)]
        expired = sandbox_purchase(500)
        clock.now += timedelta(seconds=ttl_s + 60)
        for payment_id in held:
            assert service.release_review(payment_id, "checked", "cli:tester").status is PaymentStatus.PENDING

        with database.read() as connection:
            due = {
                pid
                for _owner, pid in records.expired_pending_payments(
                    connection, clock.now - timedelta(seconds=ttl_s), 10_000
                )
            }
        assert expired in due and not due & set(held)
        assert service.close_expired(ttl_s=ttl_s) >= 1
        statuses = {pid: service.get_payment(CALLER, PaymentLookup(pid, "")).status for pid in [*held, expired]}
        assert statuses == {**dict.fromkeys(held, PaymentStatus.PENDING), expired: PaymentStatus.CLOSED}
    finally:
        service.close()
