"""Service functions: one per operation, each owning its database transaction (DESIGN.md §3-4).

A keyed operation runs as: claim the idempotency key → (for a wallet debit) take the account's fenced Redis
lock → one write transaction that applies every balance change in account-id order, writes the balanced journal
entry, the payment and the idempotency record → commit → release. Retries of a whole attempt happen only for
reasons that prove nothing was committed (a stale fence, a deadlock, a lost race on the unique key).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from paygate.db import Database
from paygate.errors import InsufficientFunds, NotFound, Unavailable
from paygate.ids import new_id
from paygate.metrics import WorkerMetrics
from paygate.schema import payments
from workers import ledger
from workers.channels import ChannelOutcome, Channels
from workers.domain import (
    PLATFORM_SUBJECT,
    AccountKind,
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    PaymentRecord,
    PaymentStatus,
    PaymentType,
    TopUpCommand,
    request_hash,
)
from workers.idempotency import Claim, Idempotency
from workers.locks import FencedLocks, LockLease

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
ORDER_SCOPE = "order"

# Built once, bound per call (see workers/ledger.py for why).
_PAYMENT_BY_ID = select(payments).where(payments.c.payment_id == bindparam("payment_id"))
_PAYMENT_BY_ORDER = select(payments).where(
    payments.c.owner == bindparam("owner"), payments.c.order_id == bindparam("order_id")
)
_INSERT_PAYMENT = payments.insert()


class StaleFence(Exception):
    """Our lock lease expired and a newer holder wrote the account; nothing of ours was committed."""

    def __init__(self, resource: str, database_fence: int) -> None:
        super().__init__(f"stale fence on {resource}")
        self.resource = resource
        self.database_fence = database_fence


@dataclass(frozen=True)
class BalanceChange:
    account: ledger.Account
    amount_minor: int
    lease: LockLease | None = None  # set for fenced debits of non-negative accounts


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_transient(error: DBAPIError) -> bool:
    """Deadlocks and serialization failures: the transaction was rolled back and may simply be retried."""
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate in {"40001", "40P01"}:
        return True
    args: tuple[object, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in {1213, 1205}  # MySQL: deadlock, lock wait timeout


class PaymentService:
    def __init__(
        self,
        database: Database,
        locks: FencedLocks,
        idempotency: Idempotency,
        channels: Channels,
        *,
        lock_lease_ms: int,
        lock_wait_ms: int,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = database
        self._locks = locks
        self._idempotency = idempotency
        self._channels = channels
        self._lock_lease_ms = lock_lease_ms
        self._lock_wait_ms = lock_wait_ms
        self._metrics = metrics
        self._clock = clock

    # -- operations -----------------------------------------------------------------------------------

    def top_up(self, caller: Caller, command: TopUpCommand) -> PaymentRecord:
        def wallet(connection: Connection, now: datetime) -> ledger.Account:
            return ledger.ensure_account(connection, AccountKind.WALLET, command.user_id, command.currency, now)

        return self._channel_payment(
            caller, command, PaymentType.TOP_UP, payee_id="", description="", credit_account=wallet
        )

    def create_payment(self, caller: Caller, command: CreatePaymentCommand) -> PaymentRecord:
        if command.method is Method.WALLET:
            return self._keyed(
                caller,
                command.order_id,
                request_hash(command),
                lambda claim: self._wallet_purchase(caller, command, claim),
            )

        def payee(connection: Connection, now: datetime) -> ledger.Account:
            return self._payee_account(connection, command, now)

        return self._channel_payment(
            caller,
            command,
            PaymentType.PURCHASE,
            payee_id=command.payee_id,
            description=command.description,
            credit_account=payee,
        )

    def _channel_payment(
        self,
        caller: Caller,
        command: TopUpCommand | CreatePaymentCommand,
        payment_type: PaymentType,
        *,
        payee_id: str,
        description: str,
        credit_account: Callable[[Connection, datetime], ledger.Account],
    ) -> PaymentRecord:
        """Money in from a channel: debit its clearing account, credit `credit_account`."""
        channel = self._channels.get(command.method)
        collected: list[tuple[str, ChannelOutcome]] = []

        def attempt(claim: Claim) -> PaymentRecord:
            if not collected:  # collect once per claim, however often the ledger write is retried
                payment_id = new_id("pay")
                collected.append((payment_id, channel.collect(payment_id, command.amount_minor, command.currency)))
            payment_id, outcome = collected[0]
            if not outcome.succeeded:
                raise Unavailable(f"the {command.method.name} channel declined: {outcome.failure_reason}")
            now = self._clock()
            with self._db.write() as connection:
                clearing = ledger.ensure_account(
                    connection, AccountKind.CLEARING, command.method.value, command.currency, now
                )
                return self._settle(
                    connection,
                    claim,
                    caller,
                    payment_id=payment_id,
                    payment_type=payment_type,
                    changes=[
                        BalanceChange(clearing, -command.amount_minor),
                        BalanceChange(credit_account(connection, now), command.amount_minor),
                    ],
                    user_id=command.user_id,
                    payee_id=payee_id,
                    amount_minor=command.amount_minor,
                    currency=command.currency,
                    method=command.method,
                    description=description,
                    now=now,
                )

        return self._keyed(caller, command.order_id, request_hash(command), attempt)

    def get_payment(self, caller: Caller, lookup: PaymentLookup) -> PaymentRecord:
        with self._db.read() as connection:
            if lookup.payment_id:
                row = connection.execute(_PAYMENT_BY_ID, {"payment_id": lookup.payment_id}).first()
                missing = f"no payment with payment_id {lookup.payment_id!r}"
            else:
                row = connection.execute(
                    _PAYMENT_BY_ORDER, {"owner": caller.owner, "order_id": lookup.order_id}
                ).first()
                missing = f"no payment with order_id {lookup.order_id!r} for this caller"
        if row is None:
            raise NotFound(missing)
        return PaymentRecord.from_row(row)

    def get_balance(self, query: BalanceQuery) -> int:
        with self._db.read() as connection:
            account = ledger.find_account(connection, AccountKind.WALLET, query.user_id, query.currency)
        return 0 if account is None else account.balance_minor

    # -- the wallet debit ---------------------------------------------------------------------------------

    def _wallet_purchase(self, caller: Caller, command: CreatePaymentCommand, claim: Claim) -> PaymentRecord:
        with self._db.read() as connection:
            wallet = ledger.find_account(connection, AccountKind.WALLET, command.user_id, command.currency)
        if wallet is None or wallet.balance_minor < command.amount_minor:
            # A fast answer without taking the lock; the fenced write below is what actually guarantees it.
            raise self._insufficient(command, 0 if wallet is None else wallet.balance_minor)
        lease = self._locks.acquire(f"account:{wallet.account_id}", self._lock_lease_ms, self._lock_wait_ms)
        try:
            now = self._clock()
            with self._db.write() as connection:
                payee = self._payee_account(connection, command, now)
                return self._settle(
                    connection,
                    claim,
                    caller,
                    payment_id=new_id("pay"),
                    payment_type=PaymentType.PURCHASE,
                    changes=[
                        BalanceChange(wallet, -command.amount_minor, lease),
                        BalanceChange(payee, command.amount_minor),
                    ],
                    user_id=command.user_id,
                    payee_id=command.payee_id,
                    amount_minor=command.amount_minor,
                    currency=command.currency,
                    method=command.method,
                    description=command.description,
                    now=now,
                    on_insufficient=lambda: self._insufficient(command, None),
                )
        finally:
            self._locks.release_quietly(lease)

    @staticmethod
    def _insufficient(command: CreatePaymentCommand, available_minor: int | None) -> InsufficientFunds:
        detail = "" if available_minor is None else f" (available {available_minor})"
        return InsufficientFunds(
            f"wallet of {command.user_id!r} holds less than {command.amount_minor} {command.currency}{detail}; "
            "top up first — this order_id may be retried afterwards"
        )

    @staticmethod
    def _payee_account(connection: Connection, command: CreatePaymentCommand, now: datetime) -> ledger.Account:
        if command.payee_id:
            return ledger.ensure_account(connection, AccountKind.PAYABLE, command.payee_id, command.currency, now)
        return ledger.ensure_account(connection, AccountKind.REVENUE, PLATFORM_SUBJECT, command.currency, now)

    # -- shared machinery --------------------------------------------------------------------------------

    def _settle(
        self,
        connection: Connection,
        claim: Claim,
        caller: Caller,
        *,
        payment_id: str,
        payment_type: PaymentType,
        changes: list[BalanceChange],
        user_id: str,
        payee_id: str,
        amount_minor: int,
        currency: str,
        method: Method,
        description: str,
        now: datetime,
        on_insufficient: Callable[[], Exception] | None = None,
    ) -> PaymentRecord:
        """Apply balance changes, write the entry, the SUCCEEDED payment and the idempotency record."""
        # Fenced debits first: they decide whether the operation happens at all, before anything is written.
        for change in sorted((c for c in changes if c.lease is not None), key=lambda c: c.account.account_id):
            assert change.lease is not None
            outcome = ledger.debit_fenced(
                connection, change.account.account_id, -change.amount_minor, change.lease.fence
            )
            if outcome is ledger.DebitOutcome.STALE_FENCE:
                current = ledger.find_account(
                    connection, change.account.kind, change.account.subject, change.account.currency
                )
                raise StaleFence(change.lease.resource, current.fence if current else change.lease.fence)
            if outcome is ledger.DebitOutcome.INSUFFICIENT_FUNDS:
                raise on_insufficient() if on_insufficient else InsufficientFunds("insufficient funds")
        credits = sorted((c for c in changes if c.lease is None), key=lambda c: c.account.account_id)
        # Unfenced increments hold their row lock until commit, and hot accounts (platform revenue, a best-selling
        # creator) are shared by every purchase, so they go as late as the database allows. On PostgreSQL that is
        # after the inserts: the foreign-key check on postings takes FOR KEY SHARE, which does not block our later
        # UPDATE. On MySQL/MariaDB the foreign-key check takes a shared lock that two transactions could then
        # both try to upgrade (a deadlock on every contended hot row), so there the increments come first.
        credits_last = connection.dialect.name == "postgresql"
        if not credits_last:
            for change in credits:
                ledger.apply_unfenced(connection, change.account.account_id, change.amount_minor)
        entry_id = new_id("je")
        ledger.post_entry(
            connection,
            entry_id=entry_id,
            kind=payment_type.value,
            owner=caller.owner,
            payment_id=payment_id,
            entry_postings=[ledger.Posting(c.account.account_id, c.amount_minor, currency) for c in changes],
            now=now,
        )
        record = PaymentRecord(
            payment_id=payment_id,
            owner=caller.owner,
            order_id=claim.key,
            payment_type=payment_type,
            user_id=user_id,
            payee_id=payee_id,
            amount_minor=amount_minor,
            currency=currency,
            method=method,
            status=PaymentStatus.SUCCEEDED,
            refunded_minor=0,
            failure_reason="",
            description=description,
            entry_id=entry_id,
            created_at=now,
            updated_at=now,
        )
        connection.execute(
            _INSERT_PAYMENT,
            {
                "payment_id": record.payment_id,
                "owner": record.owner,
                "order_id": record.order_id,
                "payment_type": record.payment_type.value,
                "user_id": record.user_id,
                "payee_id": record.payee_id,
                "amount_minor": record.amount_minor,
                "currency": record.currency,
                "method": record.method.value,
                "status": record.status.value,
                "refunded_minor": 0,
                "failure_reason": "",
                "description": record.description,
                "entry_id": entry_id,
                "created_at": now,
                "updated_at": now,
            },
        )
        self._idempotency.record(connection, claim, payment_id, record.to_json(), now)
        if credits_last:
            for change in credits:
                ledger.apply_unfenced(connection, change.account.account_id, change.amount_minor)
        return record

    def _keyed(
        self, caller: Caller, order_id: str, fingerprint: str, attempt: Callable[[Claim], PaymentRecord]
    ) -> PaymentRecord:
        with self._idempotency.claim(caller.owner, ORDER_SCOPE, order_id, fingerprint) as claim:
            if claim.replay is not None:
                return PaymentRecord.from_json(claim.replay)
            for attempt_number in range(1, MAX_ATTEMPTS + 1):
                try:
                    record = attempt(claim)
                except StaleFence as stale:
                    log.warning("stale lock fence; retrying", extra={"fields": {"resource": stale.resource}})
                    self._count_retry("stale_fence")
                    self._locks.raise_fence(stale.resource, stale.database_fence)
                    continue
                except IntegrityError:
                    # Lost a race on the unique (owner, order) key: the winner's result is the answer.
                    earlier = self._idempotency.lookup(caller.owner, ORDER_SCOPE, order_id, fingerprint)
                    if earlier is not None:
                        return PaymentRecord.from_json(earlier)
                    raise
                except DBAPIError as error:
                    if not is_transient(error):
                        raise
                    self._count_retry("deadlock")  # rolled back by the database: nothing was written
                    if attempt_number < MAX_ATTEMPTS:
                        time.sleep(random.uniform(0.005, 0.05) * attempt_number)
                    continue
                self._count(record)
                return record
        raise Unavailable(
            f"order {order_id!r} could not be applied after {MAX_ATTEMPTS} attempts under contention; "
            "nothing was charged — retry with the same order_id"
        )

    def _count_retry(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.ledger_retries.labels(reason).inc()

    def _count(self, record: PaymentRecord) -> None:
        if self._metrics is None:
            return
        self._metrics.payments.labels(record.payment_type.value, record.method.value, record.status.value).inc()
        self._metrics.money_moved_minor.labels(record.payment_type.value, record.currency).inc(record.amount_minor)
