"""Refunds, transfers and history on a real database and a real Redis."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from runtime.db import Database
from runtime.errors import AlreadyExists, FailedPrecondition, InsufficientFunds, NotFound, Unavailable
from runtime.schema import accounts, postings
from runtime.settings import Settings
from workers.domain.types import (
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    PaymentStatus,
    RefundCommand,
    TopUpCommand,
    TransactionsQuery,
    TransferCommand,
)
from workers.service import PaymentService
from workers.wiring import build_service

CALLER = Caller(owner="refunds", key_id="key_r", request_id="req_r")


@pytest.fixture
def service(database: Database, redis_url: str, redis_prefix: str) -> Iterator[PaymentService]:
    settings = Settings(
        channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, lock_wait_ms=5000, platform_fee_bps=3000
    )
    yield build_service(settings, database, metrics=None)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def fund(service: PaymentService, user: str, amount: int, currency: str = "CNY") -> None:
    service.top_up(CALLER, TopUpCommand(uid("t"), user, amount, currency, Method.SANDBOX))


def buy(service: PaymentService, user: str, amount: int, payee: str, method: Method = Method.WALLET):
    return service.create_payment(CALLER, CreatePaymentCommand(uid("o"), user, amount, "CNY", method, payee, "course"))


def balance(service: PaymentService, user: str, currency: str = "CNY") -> int:
    return service.get_balance(BalanceQuery(user, currency))


def account_balance(database: Database, kind: str, subject: str, currency: str = "CNY") -> int:
    with database.read() as connection:
        value = connection.execute(
            select(accounts.c.balance_minor).where(
                accounts.c.kind == kind, accounts.c.subject == subject, accounts.c.currency == currency
            )
        ).scalar_one_or_none()
    return int(value or 0)


def test_partial_then_full_refund_reverses_the_split_exactly(service: PaymentService, database: Database) -> None:
    user, creator = uid("u"), uid("c")
    fund(service, user, 1_001)
    payment = buy(service, user, 1_001, creator)
    assert (payment.creator_amount_minor, payment.platform_fee_minor) == (701, 300)  # 30 % fee, floor
    revenue_before = account_balance(database, "revenue", "platform")

    first = service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 333, "changed mind"))
    assert first.payment_status is PaymentStatus.PARTIALLY_REFUNDED
    assert first.creator_amount_minor + first.platform_fee_minor == 333
    second = service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 1, ""))
    rest = service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 0, "the rest"))
    assert rest.amount_minor == 1_001 - 333 - 1
    assert rest.payment_status is PaymentStatus.REFUNDED

    assert sum(r.creator_amount_minor for r in (first, second, rest)) == 701
    assert sum(r.platform_fee_minor for r in (first, second, rest)) == 300
    assert balance(service, user) == 1_001
    assert account_balance(database, "payable", creator) == 0
    assert account_balance(database, "revenue", "platform") == revenue_before - 300
    final = service.get_payment(CALLER, PaymentLookup(payment.payment_id, ""))
    assert (final.status, final.refunded_minor) == (PaymentStatus.REFUNDED, 1_001)


def test_refunds_are_idempotent_and_never_exceed_the_payment(service: PaymentService) -> None:
    user, creator = uid("u"), uid("c")
    fund(service, user, 500)
    payment = buy(service, user, 500, creator)
    command = RefundCommand(payment.payment_id, uid("r"), 200, "")
    assert service.refund_payment(CALLER, command) == service.refund_payment(CALLER, command)
    with pytest.raises(AlreadyExists):
        service.refund_payment(CALLER, RefundCommand(payment.payment_id, command.refund_id, 201, ""))
    with pytest.raises(FailedPrecondition, match="exceeds the 300"):
        service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 301, ""))
    assert balance(service, user) == 200
    service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 300, ""))
    with pytest.raises(FailedPrecondition, match="REFUNDED"):
        service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 1, ""))
    assert balance(service, user) == 500


def test_racing_refunds_never_refund_more_than_was_paid(service: PaymentService, database: Database) -> None:
    user, creator = uid("u"), uid("c")
    fund(service, user, 1_000)
    payment = buy(service, user, 1_000, creator)
    outcomes: list[str] = []
    lock = threading.Lock()

    def refund() -> None:
        for _ in range(4):
            command = RefundCommand(payment.payment_id, uid("r"), 90, "")
            result = "unsettled"
            # UNAVAILABLE under contention says "nothing was moved — retry with the same refund id": a caller does
            # that, so the race must still end with every refund applied once or refused.
            for _attempt in range(20):
                try:
                    service.refund_payment(CALLER, command)
                    result = "ok"
                except FailedPrecondition:
                    result = "refused"
                except Unavailable:
                    continue
                break
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=refund) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 24 and "unsettled" not in outcomes, outcomes
    assert outcomes.count("ok") == 1_000 // 90  # 11 fit, 13 were refused
    final = service.get_payment(CALLER, PaymentLookup(payment.payment_id, ""))
    assert final.refunded_minor == 90 * 11
    assert balance(service, user) == 90 * 11
    assert account_balance(database, "payable", creator) >= 0


def test_a_channel_payment_is_refunded_through_the_channel(service: PaymentService, database: Database) -> None:
    user, creator = uid("u"), uid("c")
    clearing_before = account_balance(database, "clearing", "sandbox")
    payment = buy(service, user, 400, creator, method=Method.SANDBOX)
    assert account_balance(database, "clearing", "sandbox") == clearing_before - 400
    service.refund_payment(CALLER, RefundCommand(payment.payment_id, uid("r"), 0, ""))
    assert account_balance(database, "clearing", "sandbox") == clearing_before
    assert balance(service, user) == 0  # nothing went to a wallet


def test_a_top_up_refund_needs_the_money_still_in_the_wallet(service: PaymentService) -> None:
    user = uid("u")
    top_up = service.top_up(CALLER, TopUpCommand(uid("t"), user, 300, "CNY", Method.SANDBOX))
    buy(service, user, 250, uid("c"))
    with pytest.raises(FailedPrecondition, match="balance is lower"):
        service.refund_payment(CALLER, RefundCommand(top_up.payment_id, uid("r"), 300, ""))
    service.refund_payment(CALLER, RefundCommand(top_up.payment_id, uid("r"), 50, ""))
    assert balance(service, user) == 0


def test_refund_of_an_unknown_payment_is_not_found(service: PaymentService) -> None:
    with pytest.raises(NotFound):
        service.refund_payment(CALLER, RefundCommand("pay_nope", uid("r"), 1, ""))


def test_transfers_move_money_once(service: PaymentService) -> None:
    alice, bob = uid("a"), uid("b")
    fund(service, alice, 1_000)
    command = TransferCommand(uid("x"), alice, bob, 400, "CNY")
    first = service.transfer(CALLER, command)
    assert service.transfer(CALLER, command) == first
    with pytest.raises(AlreadyExists):
        service.transfer(CALLER, TransferCommand(command.transfer_id, alice, bob, 401, "CNY"))
    with pytest.raises(InsufficientFunds):
        service.transfer(CALLER, TransferCommand(uid("x"), alice, bob, 601, "CNY"))
    assert (balance(service, alice), balance(service, bob)) == (600, 400)


def test_opposite_concurrent_transfers_conserve_money(service: PaymentService, database: Database) -> None:
    alice, bob = uid("a"), uid("b")
    fund(service, alice, 500)
    fund(service, bob, 500)
    errors: list[BaseException] = []

    def shuttle(source: str, target: str) -> None:
        for _ in range(10):
            try:
                service.transfer(CALLER, TransferCommand(uid("x"), source, target, 37, "CNY"))
            except InsufficientFunds:
                pass
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

    threads = [threading.Thread(target=shuttle, args=pair) for pair in [(alice, bob), (bob, alice)] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert balance(service, alice) + balance(service, bob) == 1_000
    assert min(balance(service, alice), balance(service, bob)) >= 0
    with database.read() as connection:
        for user in (alice, bob):
            account_id, stored = connection.execute(
                select(accounts.c.account_id, accounts.c.balance_minor).where(
                    accounts.c.kind == "wallet", accounts.c.subject == user
                )
            ).one()
            summed = connection.execute(
                select(func.sum(postings.c.amount_minor)).where(postings.c.account_id == account_id)
            ).scalar_one()
            assert stored == summed


def test_history_is_newest_first_and_pages_stay_correct_while_entries_are_written(service: PaymentService) -> None:
    user = uid("u")
    for amount in range(1, 8):
        fund(service, user, amount)  # postings +1 … +7
    first = service.list_transactions(CALLER, TransactionsQuery(user, 3, ""))
    assert [t.amount_minor for t in first.transactions] == [7, 6, 5]
    assert first.next_page_token
    fund(service, user, 100)  # written between pages: newer, so it cannot shift the pages still to come
    second = service.list_transactions(CALLER, TransactionsQuery(user, 3, first.next_page_token))
    third = service.list_transactions(CALLER, TransactionsQuery(user, 3, second.next_page_token))
    assert [t.amount_minor for t in second.transactions] == [4, 3, 2]
    assert [t.amount_minor for t in third.transactions] == [1]
    assert third.next_page_token == ""
    assert {t.kind for t in first.transactions} == {"top_up"}
    newest = service.list_transactions(CALLER, TransactionsQuery(user, 50, ""))
    assert [t.amount_minor for t in newest.transactions][:2] == [100, 7]
