"""Service functions on a real database and a real Redis: idempotency, funds, concurrency."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import func, select

from runtime.db import Database
from runtime.errors import AlreadyExists, InsufficientFunds, NotFound, RequestInFlight, Unimplemented
from runtime.schema import accounts, idempotency_records, journal_entries, payments, postings
from runtime.settings import Settings
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
from workers.wiring import build_service


@pytest.fixture
def service(database: Database, redis_url: str, redis_prefix: str) -> Iterator[PaymentService]:
    settings = Settings(channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, lock_wait_ms=5000)
    built = build_service(settings, database, metrics=None)
    yield built
    built.close()  # stops the in-flight guard renewer


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


CALLER = Caller(owner="orders", key_id="key_1", request_id="req_1")


def top_up(service: PaymentService, user: str, amount: int, currency: str = "CNY", caller: Caller = CALLER):
    return service.top_up(caller, TopUpCommand(uid("o"), user, amount, currency, Method.SANDBOX))


def purchase(user: str, amount: int, *, order: str | None = None, payee: str = "", currency: str = "CNY"):
    return CreatePaymentCommand(order or uid("o"), user, amount, currency, Method.WALLET, payee, "course")


def balance(service: PaymentService, user: str, currency: str = "CNY") -> int:
    return service.get_balance(BalanceQuery(user, currency))


def test_top_up_then_wallet_purchase_moves_money(service: PaymentService, database: Database) -> None:
    user, creator = uid("u"), uid("c")
    paid_in = top_up(service, user, 10_000)
    assert paid_in.status is PaymentStatus.SUCCEEDED
    bought = service.create_payment(CALLER, purchase(user, 2_500, payee=creator))
    assert bought.status is PaymentStatus.SUCCEEDED
    assert balance(service, user) == 7_500
    with database.read() as connection:
        payable = connection.execute(
            select(accounts.c.balance_minor).where(accounts.c.kind == "payable", accounts.c.subject == creator)
        ).scalar_one()
        entry_total = connection.execute(
            select(func.sum(postings.c.amount_minor)).where(postings.c.entry_id == bought.entry_id)
        ).scalar_one()
    # The default platform fee is 20 %: the creator gets 2,000 and the platform 500 (three postings, sum zero).
    assert payable == 2_000
    assert (bought.creator_amount_minor, bought.platform_fee_minor) == (2_000, 500)
    assert entry_total == 0


def test_a_purchase_without_payee_pays_the_platform(service: PaymentService, database: Database) -> None:
    user = uid("u")
    top_up(service, user, 300, currency="JPY")
    with database.read() as connection:
        before = (
            connection.execute(
                select(accounts.c.balance_minor).where(accounts.c.kind == "revenue", accounts.c.currency == "JPY")
            ).scalar_one_or_none()
            or 0
        )
    service.create_payment(CALLER, purchase(user, 300, currency="JPY"))
    with database.read() as connection:
        after = connection.execute(
            select(accounts.c.balance_minor).where(accounts.c.kind == "revenue", accounts.c.currency == "JPY")
        ).scalar_one()
    assert after - before == 300
    assert balance(service, user, "JPY") == 0


def test_same_key_same_request_returns_the_original_result(service: PaymentService, database: Database) -> None:
    user = uid("u")
    top_up(service, user, 1_000)
    command = purchase(user, 400)
    first = service.create_payment(CALLER, command)
    again = service.create_payment(CALLER, command)
    assert again == first
    assert balance(service, user) == 600  # charged once
    with database.read() as connection:
        count = connection.execute(
            select(func.count()).select_from(payments).where(payments.c.order_id == command.order_id)
        ).scalar_one()
    assert count == 1


def test_same_key_different_request_is_already_exists(service: PaymentService) -> None:
    user = uid("u")
    top_up(service, user, 1_000)
    command = purchase(user, 400)
    service.create_payment(CALLER, command)
    with pytest.raises(AlreadyExists, match=command.order_id):
        service.create_payment(CALLER, purchase(user, 401, order=command.order_id))
    # The order-id namespace is shared by TopUp and CreatePayment.
    with pytest.raises(AlreadyExists):
        service.top_up(CALLER, TopUpCommand(command.order_id, user, 400, "CNY", Method.SANDBOX))
    assert balance(service, user) == 600


def test_order_ids_are_scoped_to_the_calling_owner(service: PaymentService) -> None:
    user = uid("u")
    order = uid("o")
    other = Caller(owner="another-service", key_id="key_2", request_id="r")
    a = service.top_up(CALLER, TopUpCommand(order, user, 100, "CNY", Method.SANDBOX))
    b = service.top_up(other, TopUpCommand(order, user, 100, "CNY", Method.SANDBOX))
    assert a.payment_id != b.payment_id
    assert balance(service, user) == 200
    assert service.get_payment(other, PaymentLookup("", order)).payment_id == b.payment_id
    assert service.get_payment(CALLER, PaymentLookup("", order)).payment_id == a.payment_id
    # Another owner's payment looks exactly like a missing one, by payment_id too (docs/decisions.md).
    with pytest.raises(NotFound) as foreign:
        service.get_payment(other, PaymentLookup(a.payment_id, ""))
    with pytest.raises(NotFound) as missing:
        service.get_payment(other, PaymentLookup("pay_does_not_exist", ""))
    assert foreign.value.message == missing.value.message


def test_insufficient_funds_changes_nothing_and_the_key_stays_usable(
    service: PaymentService, database: Database
) -> None:
    user = uid("u")
    top_up(service, user, 100)
    command = purchase(user, 101)
    with database.read() as connection:
        entries_before = connection.execute(select(func.count()).select_from(journal_entries)).scalar_one()
    with pytest.raises(InsufficientFunds, match="top up"):
        service.create_payment(CALLER, command)
    with database.read() as connection:
        entries_after = connection.execute(select(func.count()).select_from(journal_entries)).scalar_one()
        records = connection.execute(
            select(func.count())
            .select_from(idempotency_records)
            .where(idempotency_records.c.idempotency_key == command.order_id)
        ).scalar_one()
    assert entries_after == entries_before
    assert records == 0
    assert balance(service, user) == 100
    top_up(service, user, 1)
    assert service.create_payment(CALLER, command).status is PaymentStatus.SUCCEEDED
    assert balance(service, user) == 0


def test_a_purchase_from_an_unknown_wallet_is_insufficient_funds(service: PaymentService) -> None:
    with pytest.raises(InsufficientFunds):
        service.create_payment(CALLER, purchase(uid("nobody"), 1))


def test_a_call_while_the_first_is_in_flight_is_aborted(
    service: PaymentService, redis_client: redis.Redis, redis_prefix: str
) -> None:
    user = uid("u")
    top_up(service, user, 100)
    command = purchase(user, 50)
    # Hold the in-flight guard exactly as a concurrent first call would.
    guard = f"{redis_prefix}inflight:{{{CALLER.owner}:order:{command.order_id}}}"
    redis_client.set(guard, "someone-else", px=10_000)
    with pytest.raises(RequestInFlight, match="retry"):
        service.create_payment(CALLER, command)
    redis_client.delete(guard)
    assert service.create_payment(CALLER, command).status is PaymentStatus.SUCCEEDED


def test_unknown_payment_is_not_found(service: PaymentService) -> None:
    with pytest.raises(NotFound):
        service.get_payment(CALLER, PaymentLookup("pay_missing", ""))
    with pytest.raises(NotFound):
        service.get_payment(CALLER, PaymentLookup("", "no-such-order"))


def test_a_channel_this_deployment_has_no_configuration_for_is_unimplemented(service: PaymentService) -> None:
    # The service here is built without a channels file (as a production stack without one): only WALLET and
    # SANDBOX are offered.
    with pytest.raises(Unimplemented, match="ALIPAY"):
        service.top_up(CALLER, TopUpCommand(uid("o"), uid("u"), 1, "CNY", Method.ALIPAY))


def test_concurrent_purchases_never_overdraw(service: PaymentService, database: Database) -> None:
    user, creator = uid("u"), uid("c")
    top_up(service, user, 1_000)
    outcomes: list[str] = []
    lock = threading.Lock()

    def buy() -> None:
        for _ in range(5):
            try:
                service.create_payment(CALLER, purchase(user, 70, payee=creator))
                result = "ok"
            except InsufficientFunds:
                result = "insufficient"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=buy) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    succeeded = outcomes.count("ok")
    assert succeeded == 1_000 // 70  # 14 fit; the other 16 were refused
    assert balance(service, user) == 1_000 - 70 * succeeded
    with database.read() as connection:
        for kind, subject in (("wallet", user), ("payable", creator)):
            account_id, stored = connection.execute(
                select(accounts.c.account_id, accounts.c.balance_minor).where(
                    accounts.c.kind == kind, accounts.c.subject == subject
                )
            ).one()
            summed = connection.execute(
                select(func.sum(postings.c.amount_minor)).where(postings.c.account_id == account_id)
            ).scalar_one()
            assert stored == summed
