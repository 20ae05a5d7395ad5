"""Group commit of wallet purchases (docs/ledger.md, "Group commit"), on each database with real Redis.

A batch is handed straight to `commit_purchases`, as the committer thread does, so each test knows exactly which
purchases share a transaction. Every purchase keeps its own outcome, one transaction commits them all, a hot
account gets one balance update per batch, and the ledger verifies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import event

from runtime.db import Database
from runtime.errors import AlreadyExists, InsufficientFunds, RequestInFlight
from runtime.settings import Settings
from workers.domain.types import (
    AccountKind,
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentRecord,
    PaymentStatus,
    TopUpCommand,
)
from workers.execution.group_commit import GroupCommitter, Pending
from workers.ledger import accounts
from workers.ledger.verify import verify
from workers.operations.context import lock_resource
from workers.operations.payments import wallet_intent
from workers.operations.purchase_batch import PurchaseIntent, SinglePath, commit_purchases
from workers.service import PaymentService
from workers.wiring import build_service

CALLER = Caller(owner="orders", key_id="key_1", request_id="req_1")


@pytest.fixture
def service(database: Database, redis_url: str, redis_prefix: str) -> Iterator[PaymentService]:
    # No committer thread: each test commits its own batches, so it knows what shares a transaction.
    settings = Settings(channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix)
    built = build_service(settings, database, metrics=None, group_commit=False)
    yield built
    built.close()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def funded(service: PaymentService, amount_minor: int) -> str:
    user = uid("u")
    service.top_up(CALLER, TopUpCommand(uid("t"), user, amount_minor, "CNY", Method.SANDBOX))
    return user


def purchase(user: str, amount_minor: int, payee: str = "", order_id: str | None = None) -> CreatePaymentCommand:
    return CreatePaymentCommand(order_id or uid("o"), user, amount_minor, "CNY", Method.WALLET, payee, "course")


def commit(service: PaymentService, commands: list[CreatePaymentCommand]) -> list[Any]:
    """One batch; each purchase's outcome: its record, or the exception it would raise."""
    batch = [Pending(wallet_intent(service.context, CALLER, command)) for command in commands]
    commit_purchases(service.context, batch)
    outcomes: list[Any] = []
    for pending in batch:
        assert pending.future.done(), "every purchase of a batch gets an outcome"
        outcomes.append(pending.future.exception() or pending.future.result())
    return outcomes


def balance(service: PaymentService, subject: str) -> int:
    return service.get_balance(BalanceQuery(subject, "CNY"))


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    """The SQL the writer engine runs (observed, not altered)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        # One entry per row the statement is run for: an executemany of six rows counts six.
        seen.extend([" ".join(statement.split()).upper()] * (len(parameters) if executemany else 1))

    event.listen(database.writer, "before_cursor_execute", record)
    yield seen
    event.remove(database.writer, "before_cursor_execute", record)


def test_a_refused_purchase_does_not_fail_its_batch_mates(service: PaymentService, database: Database) -> None:
    rich, poor, other = funded(service, 1_000), funded(service, 50), funded(service, 500)
    creator = uid("c")
    outcomes = commit(
        service, [purchase(rich, 300, creator), purchase(poor, 100, creator), purchase(other, 200, creator)]
    )
    assert isinstance(outcomes[0], PaymentRecord) and outcomes[0].status is PaymentStatus.SUCCEEDED
    assert isinstance(outcomes[1], InsufficientFunds) and "available 50" in str(outcomes[1])
    assert isinstance(outcomes[2], PaymentRecord) and outcomes[2].status is PaymentStatus.SUCCEEDED
    assert (balance(service, rich), balance(service, poor), balance(service, other)) == (700, 50, 300)
    assert verify(database).ok


def test_a_batch_is_one_transaction_with_one_update_per_account(
    service: PaymentService, database: Database, statements: list[str]
) -> None:
    buyers = [funded(service, 1_000) for _ in range(6)]
    creator = uid("hot")
    statements.clear()
    outcomes = commit(service, [purchase(buyer, 100, creator) for buyer in buyers])
    assert all(isinstance(o, PaymentRecord) for o in outcomes)
    updates = [s for s in statements if s.startswith("UPDATE ACCOUNTS")]
    # Six wallets debited, and the creator and the platform credited six times each: eight updates, not eighteen.
    assert len(updates) == len(buyers) + 2, updates
    inserts = [s for s in statements if s.startswith("INSERT INTO POSTINGS")]
    assert len(inserts) == 6 * 3, "three postings per purchase"
    assert sum(o.creator_amount_minor for o in outcomes) == balance_of_payable(service, creator)
    assert verify(database).ok


def balance_of_payable(service: PaymentService, creator: str) -> int:
    with service.context.db.read() as connection:
        account = accounts.find_account(connection, AccountKind.PAYABLE, creator, "CNY")
    assert account is not None
    return account.balance_minor


def test_two_purchases_from_one_wallet_in_one_batch_are_judged_in_arrival_order(
    service: PaymentService, database: Database
) -> None:
    user = funded(service, 150)
    first, second, third = commit(service, [purchase(user, 100), purchase(user, 100), purchase(user, 50)])
    assert isinstance(first, PaymentRecord)
    assert isinstance(second, InsufficientFunds) and "available 50" in str(second)
    assert isinstance(third, PaymentRecord)
    assert balance(service, user) == 0
    assert verify(database).ok


def test_a_repeated_order_id_is_answered_from_its_record_or_refused(service: PaymentService) -> None:
    user = funded(service, 1_000)
    command = purchase(user, 100)
    (original,) = commit(service, [command])
    (replayed,) = commit(service, [command])  # the same request again
    (different,) = commit(service, [purchase(user, 200, order_id=command.order_id)])  # another under the same id
    assert isinstance(replayed, PaymentRecord) and replayed.payment_id == original.payment_id
    assert isinstance(different, AlreadyExists)
    assert balance(service, user) == 900


def test_the_same_order_id_twice_in_one_batch_commits_once(service: PaymentService) -> None:
    user = funded(service, 1_000)
    command = purchase(user, 100)
    first, second = commit(service, [command, command])
    assert isinstance(first, PaymentRecord)
    assert isinstance(second, RequestInFlight) and second.retry_after_ms is not None
    assert balance(service, user) == 900
    # Once the first has committed, the retry gets its answer.
    (retried,) = commit(service, [command])
    assert isinstance(retried, PaymentRecord) and retried.payment_id == first.payment_id


def test_an_order_id_held_elsewhere_is_aborted_and_a_busy_wallet_is_passed_on(
    service: PaymentService, redis_client: redis.Redis, redis_prefix: str
) -> None:
    user, other = funded(service, 1_000), funded(service, 1_000)
    held = purchase(user, 100)
    guard = f"{redis_prefix}inflight:{{{CALLER.owner}:order:{held.order_id}}}"
    redis_client.set(guard, "someone-else", px=10_000)
    lease = service.locks.acquire(lock_resource(AccountKind.WALLET, other, "CNY"), lease_ms=10_000, wait_ms=1_000)
    try:
        in_flight, busy = commit(service, [held, purchase(other, 100)])
    finally:
        service.locks.release(lease)
        redis_client.delete(guard)
    assert isinstance(in_flight, RequestInFlight)
    assert isinstance(busy, SinglePath) and busy.reason == "lock_busy"
    assert (balance(service, user), balance(service, other)) == (1_000, 1_000)
    # The batch released what it took: the guard of the passed-on purchase is free for its one-at-a-time run.
    assert not redis_client.keys(f"{redis_prefix}inflight:*")


def test_a_stale_fence_passes_the_purchase_on_and_lifts_the_counter(
    service: PaymentService, database: Database, redis_client: redis.Redis, redis_prefix: str
) -> None:
    user = funded(service, 1_000)
    resource = lock_resource(AccountKind.WALLET, user, "CNY")
    # A newer holder wrote the wallet with a fence far above what Redis hands out next (Redis lost its counter).
    commit(service, [purchase(user, 10)])
    with database.write() as connection:
        connection.exec_driver_sql(
            "UPDATE accounts SET fence = 1000000 WHERE kind = 'wallet' AND subject = ?"
            if database.dialect == "sqlite"
            else "UPDATE accounts SET fence = 1000000 WHERE kind = 'wallet' AND subject = %s",
            (user,),
        )
    (stale,) = commit(service, [purchase(user, 10)])
    assert isinstance(stale, SinglePath) and stale.reason == "stale_fence"
    assert int(redis_client.get(f"{redis_prefix}{{{resource}}}:fence") or 0) >= 1_000_000
    # The one-at-a-time retry now gets a lease above the row's fence.
    (after,) = commit(service, [purchase(user, 10)])
    assert isinstance(after, PaymentRecord)
    assert balance(service, user) == 980


def test_the_committer_thread_serves_concurrent_callers(service: PaymentService, database: Database) -> None:
    committer: GroupCommitter[PurchaseIntent] = GroupCommitter(
        "test", lambda batch: commit_purchases(service.context, batch), max_batch=16, max_wait_ms=1
    )
    try:
        users = [funded(service, 300) for _ in range(8)]
        futures = [
            committer.submit_nowait(wallet_intent(service.context, CALLER, purchase(user, 100)))
            for user in users
            for _ in range(4)
        ]
        outcomes = [f.exception() or f.result() for f in futures]
    finally:
        committer.close()
    committed = [o for o in outcomes if isinstance(o, PaymentRecord)]
    refused = [o for o in outcomes if isinstance(o, InsufficientFunds)]
    assert len(committed) == 8 * 3 and len(refused) == 8, outcomes
    assert all(balance(service, user) == 0 for user in users)
    assert verify(database).ok


def test_a_refused_purchase_leaves_no_trace_not_even_an_account(
    service: PaymentService, database: Database, statements: list[str]
) -> None:
    poor, new_creator = funded(service, 10), uid("new-creator")
    statements.clear()
    (refused,) = commit(service, [purchase(poor, 100, new_creator)])
    assert isinstance(refused, InsufficientFunds)
    assert not [s for s in statements if s.startswith(("INSERT", "UPDATE"))], statements
    with database.read() as connection:
        assert accounts.find_account(connection, AccountKind.PAYABLE, new_creator, "CNY") is None
