"""Balance ceilings and owner isolation in the service, on every database (docs/api.md, docs/security.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, func, select

from runtime.db import Database
from runtime.errors import BalanceLimitExceeded, InvalidArgument, NotFound
from runtime.schema import metadata
from runtime.settings import Settings
from workers.domain.limits import MAX_AMOUNT_MINOR, MAX_SYSTEM_BALANCE_MINOR, MAX_USER_BALANCE_MINOR
from workers.domain.types import (
    AccountKind,
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    RefundCommand,
    TopUpCommand,
    TransactionsQuery,
    TransferCommand,
)
from workers.ledger import accounts as ledger
from workers.ledger.verify import verify
from workers.service import PaymentService
from workers.wiring import build_service

OWNER_A = Caller(owner="orders-a", key_id="key_a", request_id="req_a")
OWNER_B = Caller(owner="orders-b", key_id="key_b", request_id="req_b")


@pytest.fixture
def service(database: Database, redis_url: str, redis_prefix: str) -> Iterator[PaymentService]:
    yield build_service(
        Settings(channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix), database, metrics=None
    )


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def row_counts(database: Database) -> dict[str, int]:
    with database.read() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        }


def fill_wallet(service: PaymentService, user: str, currency: str) -> None:
    for _ in range(MAX_USER_BALANCE_MINOR // MAX_AMOUNT_MINOR):
        service.top_up(OWNER_A, TopUpCommand(uid("t"), user, MAX_AMOUNT_MINOR, currency, Method.SANDBOX))


def test_a_wallet_stops_at_its_ceiling_and_the_refusal_moves_nothing(
    service: PaymentService, database: Database
) -> None:
    user, currency = uid("u"), "USD"
    fill_wallet(service, user, currency)
    assert service.get_balance(BalanceQuery(user, currency)) == MAX_USER_BALANCE_MINOR
    before = row_counts(database)
    with pytest.raises(BalanceLimitExceeded) as refused:
        service.top_up(OWNER_A, TopUpCommand(uid("t"), user, 1, currency, Method.SANDBOX))
    assert refused.value.code.name == "FAILED_PRECONDITION"
    assert str(MAX_USER_BALANCE_MINOR) in refused.value.message and "nothing was moved" in refused.value.message
    assert row_counts(database) == before
    # A transfer into the full wallet is refused too, and its source keeps its money.
    sender = uid("s")
    service.top_up(OWNER_A, TopUpCommand(uid("t"), sender, 50, currency, Method.SANDBOX))
    with pytest.raises(BalanceLimitExceeded):
        service.transfer(OWNER_A, TransferCommand(uid("x"), sender, user, 50, currency))
    assert service.get_balance(BalanceQuery(sender, currency)) == 50
    # Spending from the full wallet still works, and the ledger verifies.
    service.create_payment(OWNER_A, CreatePaymentCommand(uid("p"), user, 10, currency, Method.WALLET, "c-1", ""))
    assert verify(database).ok


@pytest.mark.parametrize(
    ("kind", "lowest", "highest"),
    [
        (AccountKind.WALLET, 0, MAX_USER_BALANCE_MINOR),
        (AccountKind.PAYABLE, 0, MAX_USER_BALANCE_MINOR),
        (AccountKind.REVENUE, -MAX_SYSTEM_BALANCE_MINOR, MAX_SYSTEM_BALANCE_MINOR),
        (AccountKind.CLEARING, -MAX_SYSTEM_BALANCE_MINOR, MAX_SYSTEM_BALANCE_MINOR),
    ],
)
def test_every_kind_of_account_refuses_to_leave_its_range(
    database: Database, kind: AccountKind, lowest: int, highest: int
) -> None:
    """The bounded increment at the edges of each range (the transaction is rolled back, nothing stays)."""
    now = datetime.now(UTC)

    class Rollback(Exception):
        pass

    def move(connection: Connection, account: ledger.Account, delta: int) -> bool:
        """Apply `delta` in chunks small enough for int64 bind values; True when every chunk applied."""
        while delta:
            chunk = max(-(4 * 10**18), min(4 * 10**18, delta))
            if not ledger.apply_unfenced(connection, account, chunk):
                return False
            delta -= chunk
        return True

    with pytest.raises(Rollback), database.write() as connection:
        account = ledger.ensure_account(connection, kind, uid("k"), "EUR", now)
        assert move(connection, account, highest - 1)
        assert ledger.apply_unfenced(connection, account, 1)  # exactly at the ceiling
        assert not ledger.apply_unfenced(connection, account, 1)
        assert not ledger.apply_unfenced(connection, account, MAX_AMOUNT_MINOR)
        assert move(connection, account, lowest - highest)  # exactly at the floor
        assert not ledger.apply_unfenced(connection, account, -1)
        assert not ledger.apply_unfenced(connection, account, -MAX_AMOUNT_MINOR)
        found = ledger.find_account(connection, kind, account.subject, "EUR")
        assert found is not None and found.balance_minor == lowest
        raise Rollback


def test_another_owners_payment_cannot_be_read_or_refunded(service: PaymentService, database: Database) -> None:
    user = uid("u")
    top_up = service.top_up(OWNER_A, TopUpCommand(uid("t"), user, 5_000, "CNY", Method.SANDBOX))
    bought = service.create_payment(OWNER_A, CreatePaymentCommand(uid("p"), user, 3_000, "CNY", Method.WALLET, "c", ""))
    before = row_counts(database)
    for payment in (top_up, bought):
        with pytest.raises(NotFound) as foreign:
            service.refund_payment(OWNER_B, RefundCommand(payment.payment_id, uid("r"), 0, ""))
        with pytest.raises(NotFound) as missing:
            service.refund_payment(OWNER_B, RefundCommand("pay_missing", uid("r"), 0, ""))
        assert foreign.value.message == missing.value.message
        with pytest.raises(NotFound) as read:
            service.get_payment(OWNER_B, PaymentLookup(payment.payment_id, ""))
        assert read.value.message == foreign.value.message
        with pytest.raises(NotFound):
            service.get_payment(OWNER_B, PaymentLookup("", payment.order_id))
    assert row_counts(database) == before
    assert service.get_balance(BalanceQuery(user, "CNY")) == 2_000
    assert service.get_payment(OWNER_A, PaymentLookup(bought.payment_id, "")).payment_id == bought.payment_id


def test_history_lists_the_callers_own_entries_and_tokens_are_bound_to_it(service: PaymentService) -> None:
    user = uid("u")
    for _ in range(3):
        service.top_up(OWNER_A, TopUpCommand(uid("a"), user, 100, "CNY", Method.SANDBOX))
    service.top_up(OWNER_B, TopUpCommand(uid("b"), user, 7, "CNY", Method.SANDBOX))
    seen_by_b = service.list_transactions(OWNER_B, TransactionsQuery(user, 10, ""))
    assert [t.amount_minor for t in seen_by_b.transactions] == [7]
    first = service.list_transactions(OWNER_A, TransactionsQuery(user, 2, ""))
    assert [t.amount_minor for t in first.transactions] == [100, 100] and first.next_page_token
    for caller, query in (
        (OWNER_B, TransactionsQuery(user, 2, first.next_page_token)),  # another owner replays A's token
        (OWNER_A, TransactionsQuery(uid("other"), 2, first.next_page_token)),  # for another user
    ):
        with pytest.raises(InvalidArgument) as refused:
            service.list_transactions(caller, query)
        assert [v.field for v in refused.value.violations] == ["page_token"]
        assert "pass next_page_token unchanged" in refused.value.violations[0].description
    rest = service.list_transactions(OWNER_A, TransactionsQuery(user, 2, first.next_page_token))
    assert [t.amount_minor for t in rest.transactions] == [100] and rest.next_page_token == ""
