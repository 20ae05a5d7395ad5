"""Service functions: one per operation, each owning its database transaction (DESIGN.md §3-4).

A keyed operation runs as: claim the idempotency key → take the fenced Redis locks of the accounts it debits
(sorted, so two operations never wait on each other in a cycle) → one write transaction: fenced debits, the
balanced journal entry, the operation's own rows and the idempotency record, atomic credits → commit → release.
A whole attempt is retried only for reasons that prove nothing was committed: a stale fence, a deadlock or
serialization failure, a concurrent change to the same payment, a lost race on a unique key.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from runtime.db import Database
from runtime.errors import (
    BalanceLimitExceeded,
    FailedPrecondition,
    FieldViolation,
    InsufficientFunds,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from runtime.ids import new_id
from runtime.metrics import WorkerMetrics
from workers import store
from workers.channels.sandbox import ChannelOutcome, Channels
from workers.codec.decode import PAGE_TOKEN_RULE
from workers.codec.page_tokens import PageTokens
from workers.domain import states
from workers.domain.pricing import allocate_refund, split_fee
from workers.domain.types import (
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
    RefundCommand,
    RefundRecord,
    TopUpCommand,
    TransactionsPage,
    TransactionsQuery,
    TransferCommand,
    TransferRecord,
    request_hash,
)
from workers.execution.idempotency import Claim, Idempotency
from workers.execution.locks import FencedLocks, LockLease
from workers.ledger import accounts as ledger

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
ORDER_SCOPE = "order"
REFUND_SCOPE = "refund"
TRANSFER_SCOPE = "transfer"
T = TypeVar("T")

NEWEST = 2**62  # "before" bound of the first page


class StaleFence(Exception):
    """Our lock lease expired and a newer holder wrote the account; nothing of ours was committed."""

    def __init__(self, resource: str, database_fence: int) -> None:
        super().__init__(f"stale fence on {resource}")
        self.resource = resource
        self.database_fence = database_fence


class ConcurrentChange(Exception):
    """The payment changed between our read and our guarded update (another refund won): read again."""


@dataclass(frozen=True)
class BalanceChange:
    account: ledger.Account
    amount_minor: int
    lease: LockLease | None = None  # set for fenced debits of non-negative accounts


def utc_now() -> datetime:
    return datetime.now(UTC)


def balance_limit_exceeded(account: ledger.Account, amount_minor: int) -> BalanceLimitExceeded:
    lowest, highest = account.kind.balance_range
    bound = f"its ceiling of {highest}" if amount_minor > 0 else f"its floor of {lowest}"
    return BalanceLimitExceeded(
        f"refused: this would take {account.kind.describe(account.subject)} past {bound} {account.currency} minor "
        "units (docs/api.md, Limits); nothing was moved"
    )


def payment_not_found(field: str) -> NotFound:
    """One message whether the payment does not exist or belongs to another owner: the two must look the same."""
    return NotFound(f"no payment with this {field} exists for this API key's owner; check the {field}")


def is_transient(error: DBAPIError) -> bool:
    """Deadlocks and serialization failures: the transaction was rolled back and may simply be retried."""
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate in {"40001", "40P01"}:
        return True
    args: tuple[object, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in {1213, 1205}  # MySQL: deadlock, lock wait timeout


def lock_resource(kind: AccountKind, subject: str, currency: str) -> str:
    """Locks are named by account, not by row id, so they can be taken before the account exists."""
    return f"account:{kind.value}:{subject}:{currency}"


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
        platform_fee_bps: int = 0,
        page_tokens: PageTokens,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = database
        self._locks = locks
        self._idempotency = idempotency
        self._channels = channels
        self._lock_lease_ms = lock_lease_ms
        self._lock_wait_ms = lock_wait_ms
        self._platform_fee_bps = platform_fee_bps
        self._metrics = metrics
        self._clock = clock
        self._page_tokens = page_tokens

    def close(self) -> None:
        """Stop background helpers (the in-flight guard renewer); the worker calls this when it stops."""
        self._idempotency.close()

    # -- payments --------------------------------------------------------------------------------------

    def top_up(self, caller: Caller, command: TopUpCommand) -> PaymentRecord:
        return self._channel_payment(caller, command, PaymentType.TOP_UP)

    def create_payment(self, caller: Caller, command: CreatePaymentCommand) -> PaymentRecord:
        if command.method is Method.WALLET:
            record = self._keyed(
                caller,
                ORDER_SCOPE,
                command.order_id,
                request_hash(command),
                lambda claim: self._wallet_purchase(caller, command, claim),
                PaymentRecord.from_json,
                self._count_payment,
            )
        else:
            record = self._channel_payment(caller, command, PaymentType.PURCHASE)
        return record

    def _channel_payment(
        self, caller: Caller, command: TopUpCommand | CreatePaymentCommand, payment_type: PaymentType
    ) -> PaymentRecord:
        """Money in from a channel: its clearing account pays a wallet (top-up) or the creator and platform."""
        channel = self._channels.get(command.method)
        collected: list[tuple[str, ChannelOutcome]] = []

        def attempt(claim: Claim) -> PaymentRecord:
            if not collected:  # collect once per claim, however often the ledger write is retried
                payment_id = new_id("pay")
                collected.append((payment_id, channel.collect(payment_id, command.amount_minor, command.currency)))
            payment_id, outcome = collected[0]
            now = self._clock()
            if outcome.pending:  # confirmed later by the channel's notification (confirm_payment)
                with self._db.write() as connection:
                    return self._record_payment(connection, claim, caller, payment_id, payment_type, command, None, now)
            if not outcome.succeeded:
                raise Unavailable(f"the {command.method.name} channel declined: {outcome.failure_reason}")
            with self._db.write() as connection:
                changes = self._money_in(connection, command, now)
                return self._record_payment(connection, claim, caller, payment_id, payment_type, command, changes, now)

        return self._keyed(
            caller,
            ORDER_SCOPE,
            command.order_id,
            request_hash(command),
            attempt,
            PaymentRecord.from_json,
            self._count_payment,
        )

    def _wallet_purchase(self, caller: Caller, command: CreatePaymentCommand, claim: Claim) -> PaymentRecord:
        with self._db.read() as connection:
            wallet = ledger.find_account(connection, AccountKind.WALLET, command.user_id, command.currency)
        if wallet is None or wallet.balance_minor < command.amount_minor:
            # A fast answer without taking the lock; the fenced write below is what actually guarantees it.
            raise self._insufficient(command.user_id, command.amount_minor, command.currency, wallet)
        resource = lock_resource(AccountKind.WALLET, command.user_id, command.currency)
        with self._leases(resource) as leases:
            now = self._clock()
            with self._db.write() as connection:
                changes = [
                    BalanceChange(wallet, -command.amount_minor, leases[resource]),
                    *self._purchase_credits(connection, command, now),
                ]
                return self._record_payment(
                    connection,
                    claim,
                    caller,
                    new_id("pay"),
                    PaymentType.PURCHASE,
                    command,
                    changes,
                    now,
                    on_insufficient=lambda: self._insufficient(
                        command.user_id, command.amount_minor, command.currency, None
                    ),
                )

    def _money_in(
        self, connection: Connection, command: TopUpCommand | CreatePaymentCommand, now: datetime
    ) -> list[BalanceChange]:
        """Channel money arriving: its clearing account pays the wallet (top-up) or the creator and platform."""
        clearing = ledger.ensure_account(connection, AccountKind.CLEARING, command.method.value, command.currency, now)
        changes = [BalanceChange(clearing, -command.amount_minor)]
        if isinstance(command, TopUpCommand):
            wallet = ledger.ensure_account(connection, AccountKind.WALLET, command.user_id, command.currency, now)
            changes.append(BalanceChange(wallet, command.amount_minor))
        else:
            changes.extend(self._purchase_credits(connection, command, now))
        return changes

    def _purchase_credits(
        self, connection: Connection, command: CreatePaymentCommand, now: datetime
    ) -> list[BalanceChange]:
        """The creator's share and the platform's fee (all to the platform when there is no creator)."""
        creator_minor, fee_minor = self._split(command)
        revenue = ledger.ensure_account(connection, AccountKind.REVENUE, PLATFORM_SUBJECT, command.currency, now)
        changes = [BalanceChange(revenue, fee_minor)]
        if command.payee_id:
            payable = ledger.ensure_account(connection, AccountKind.PAYABLE, command.payee_id, command.currency, now)
            changes.append(BalanceChange(payable, creator_minor))
        return changes

    def _split(self, command: CreatePaymentCommand) -> tuple[int, int]:
        if not command.payee_id:
            return 0, command.amount_minor
        return split_fee(command.amount_minor, self._platform_fee_bps)

    def _record_payment(
        self,
        connection: Connection,
        claim: Claim,
        caller: Caller,
        payment_id: str,
        payment_type: PaymentType,
        command: TopUpCommand | CreatePaymentCommand,
        changes: list[BalanceChange] | None,
        now: datetime,
        on_insufficient: Callable[[], Exception] | None = None,
    ) -> PaymentRecord:
        """The payment row and its idempotency record; SUCCEEDED with its entry, or PENDING (changes None)."""
        purchase = command if isinstance(command, CreatePaymentCommand) else None
        creator_minor, fee_minor = self._split(purchase) if purchase else (0, 0)
        holder: list[PaymentRecord] = []

        def write_rows(entry_id: str | None) -> None:
            record = PaymentRecord(
                payment_id=payment_id,
                owner=caller.owner,
                order_id=claim.key,
                payment_type=payment_type,
                user_id=command.user_id,
                payee_id=purchase.payee_id if purchase else "",
                amount_minor=command.amount_minor,
                currency=command.currency,
                method=command.method,
                status=PaymentStatus.SUCCEEDED if entry_id else PaymentStatus.PENDING,
                refunded_minor=0,
                failure_reason="",
                description=purchase.description if purchase else "",
                entry_id=entry_id,
                created_at=now,
                updated_at=now,
                list_price_minor=purchase.list_price_minor if purchase else command.amount_minor,
                discount_minor=purchase.discount_minor if purchase else 0,
                tax_minor=purchase.tax_minor if purchase else 0,
                creator_amount_minor=creator_minor,
                platform_fee_minor=fee_minor,
            )
            store.insert_payment(connection, record)
            self._idempotency.record(connection, claim, payment_id, record.to_json(), now)
            holder.append(record)

        if changes is None:
            write_rows(None)
            return holder[0]
        self._move_money(
            connection,
            changes,
            currency=command.currency,
            kind=payment_type.value,
            owner=caller.owner,
            payment_id=payment_id,
            reference_id=payment_id,
            now=now,
            write_rows=write_rows,
            on_insufficient=on_insufficient,
        )
        return holder[0]

    def get_payment(self, caller: Caller, lookup: PaymentLookup) -> PaymentRecord:
        """A payment of the caller's owner. Another owner's payment is answered exactly like a missing one."""
        with self._db.read() as connection:
            if lookup.payment_id:
                found = store.payment_by_id(connection, caller.owner, lookup.payment_id)
            else:
                found = store.payment_by_order(connection, caller.owner, lookup.order_id)
        if found is None:
            raise payment_not_found("order_id" if lookup.order_id else "payment_id")
        return found

    def _payment_for_channel(self, payment_id: str) -> PaymentRecord:
        """By our id alone: what a channel's confirmation addresses (never reachable from a caller's RPC)."""
        with self._db.read() as connection:
            found = store.payment_for_channel_notification(connection, payment_id)
        if found is None:
            raise payment_not_found("payment_id")
        return found

    def get_balance(self, query: BalanceQuery) -> int:
        with self._db.read() as connection:
            account = ledger.find_account(connection, AccountKind.WALLET, query.user_id, query.currency)
        return 0 if account is None else account.balance_minor

    # -- asynchronous confirmation and expiry -------------------------------------------------------------

    def confirm_payment(self, payment_id: str) -> PaymentRecord:
        """The channel confirms a PENDING payment (its notification). Idempotent: a repeated notification
        changes nothing. A confirmation that arrives after the sweeper CLOSED the payment means the payer was
        charged for an order we gave up on: the money is recorded coming in and goes straight back out through the
        channel (an automatic refund), and the payment stays CLOSED, saying so."""
        for _attempt in range(MAX_ATTEMPTS):
            payment = self._payment_for_channel(payment_id)
            try:
                if payment.status is PaymentStatus.PENDING:
                    return self._settle_pending(payment)
                if payment.status is PaymentStatus.CLOSED and payment.refunded_minor == 0:
                    return self._refund_late_confirmation(payment)
            except ConcurrentChange:
                continue  # closed or confirmed meanwhile: look again
            if payment.status is PaymentStatus.FAILED:
                states.check(payment.status, PaymentStatus.SUCCEEDED)
            return payment  # already confirmed (or already refunded after closing): a duplicate notification
        raise Unavailable(f"payment {payment_id} kept changing; deliver the confirmation again")

    def _command_of(self, payment: PaymentRecord) -> TopUpCommand | CreatePaymentCommand:
        if payment.payment_type is PaymentType.TOP_UP:
            return TopUpCommand(
                payment.order_id, payment.user_id, payment.amount_minor, payment.currency, payment.method
            )
        return CreatePaymentCommand(
            payment.order_id,
            payment.user_id,
            payment.amount_minor,
            payment.currency,
            payment.method,
            payment.payee_id,
            payment.description,
        )

    def _settle_pending(self, payment: PaymentRecord) -> PaymentRecord:
        states.check(payment.status, PaymentStatus.SUCCEEDED)
        now = self._clock()
        with self._db.write() as connection:

            def write_rows(entry_id: str) -> None:
                moved = store.transition_payment(
                    connection,
                    payment.owner,
                    payment.payment_id,
                    expected=PaymentStatus.PENDING,
                    new=PaymentStatus.SUCCEEDED,
                    entry_id=entry_id,
                    failure_reason="",
                    refunded_minor=0,
                    now=now,
                )
                if not moved:
                    raise ConcurrentChange(payment.payment_id)

            self._move_money(
                connection,
                self._money_in(connection, self._command_of(payment), now),
                currency=payment.currency,
                kind=payment.payment_type.value,
                owner=payment.owner,
                payment_id=payment.payment_id,
                reference_id=payment.payment_id,
                now=now,
                write_rows=write_rows,
            )
        return self._payment_for_channel(payment.payment_id)

    def _refund_late_confirmation(self, payment: PaymentRecord) -> PaymentRecord:
        now = self._clock()
        refund_id = f"auto-{payment.payment_id}"
        reason = "confirmed by the channel after the payment was closed; refunded automatically"
        with self._db.write() as connection:
            clearing = ledger.ensure_account(
                connection, AccountKind.CLEARING, payment.method.value, payment.currency, now
            )
            wallet = ledger.ensure_account(connection, AccountKind.WALLET, payment.user_id, payment.currency, now)

            def record_late(entry_id: str) -> None:
                moved = store.transition_payment(
                    connection,
                    payment.owner,
                    payment.payment_id,
                    expected=PaymentStatus.CLOSED,
                    new=PaymentStatus.CLOSED,
                    entry_id=entry_id,
                    failure_reason=reason,
                    refunded_minor=payment.amount_minor,
                    now=now,
                )
                if not moved:
                    raise ConcurrentChange(payment.payment_id)

            # In: the channel's money reaches the payer's wallet ...
            self._move_money(
                connection,
                [BalanceChange(clearing, -payment.amount_minor), BalanceChange(wallet, payment.amount_minor)],
                currency=payment.currency,
                kind="late_payment",
                owner=payment.owner,
                payment_id=payment.payment_id,
                reference_id=payment.payment_id,
                now=now,
                write_rows=record_late,
            )

            def record_refund(entry_id: str) -> None:
                store.insert_refund(
                    connection,
                    payment.owner,
                    RefundRecord(
                        refund_id=refund_id,
                        payment_id=payment.payment_id,
                        amount_minor=payment.amount_minor,
                        currency=payment.currency,
                        creator_amount_minor=0,
                        platform_fee_minor=0,
                        reason=reason,
                        entry_id=entry_id,
                        created_at=now,
                        payment_status=PaymentStatus.CLOSED,
                    ),
                )

            # ... and straight back out through the channel. The wallet debit needs no lock: the credit above,
            # in this same transaction, covers it, so the wallet can never dip below its previous balance.
            self._move_money(
                connection,
                [BalanceChange(wallet, -payment.amount_minor), BalanceChange(clearing, payment.amount_minor)],
                currency=payment.currency,
                kind="refund",
                owner=payment.owner,
                payment_id=payment.payment_id,
                reference_id=refund_id,
                now=now,
                write_rows=record_refund,
            )
        log.warning("late confirmation refunded", extra={"fields": {"payment_id": payment.payment_id}})
        return self._payment_for_channel(payment.payment_id)

    def sweep_once(self, ttl_s: int) -> int:
        """One sweeper round, if no other worker is sweeping right now."""
        lease = self._locks.try_acquire("sweeper:expiry", lease_ms=60_000)
        if lease is None:
            return 0
        try:
            return self.close_expired(ttl_s)
        finally:
            self._locks.release_quietly(lease)

    def close_expired(self, ttl_s: int, limit: int = 500) -> int:
        """CLOSE PENDING payments older than `ttl_s` (at most `limit` per call); returns how many closed."""
        now = self._clock()
        cutoff = now - timedelta(seconds=ttl_s)
        with self._db.read() as connection:
            expired = store.expired_pending_payments(connection, cutoff, limit)
        closed = 0
        for owner, payment_id in expired:
            states.check(PaymentStatus.PENDING, PaymentStatus.CLOSED)
            with self._db.write() as connection:
                closed += store.transition_payment(
                    connection,
                    owner,
                    payment_id,
                    expected=PaymentStatus.PENDING,
                    new=PaymentStatus.CLOSED,
                    entry_id=None,
                    failure_reason=f"not confirmed by the channel within {ttl_s} s; closed",
                    refunded_minor=0,
                    now=now,
                )
        return closed

    # -- refunds ---------------------------------------------------------------------------------------

    def refund_payment(self, caller: Caller, command: RefundCommand) -> RefundRecord:
        return self._keyed(
            caller,
            REFUND_SCOPE,
            command.refund_id,
            request_hash(command),
            lambda claim: self._refund_once(caller, command, claim),
            RefundRecord.from_json,
        )

    def _refund_once(self, caller: Caller, command: RefundCommand, claim: Claim) -> RefundRecord:
        with self._db.read() as connection:
            payment = store.payment_by_id(connection, caller.owner, command.payment_id)
        if payment is None:
            raise payment_not_found("payment_id")  # also another owner's payment: it must look missing
        if payment.status not in states.REFUNDABLE:
            raise FailedPrecondition(
                f"payment {payment.payment_id} is {payment.status.name}; only SUCCEEDED or PARTIALLY_REFUNDED "
                "payments can be refunded",
                reason="PAYMENT_NOT_REFUNDABLE",
            )
        remaining = payment.amount_minor - payment.refunded_minor
        amount = command.amount_minor or remaining
        if amount > remaining:
            raise FailedPrecondition(
                f"refund of {amount} exceeds the {remaining} {payment.currency} still refundable on "
                f"{payment.payment_id} (paid {payment.amount_minor}, refunded {payment.refunded_minor})",
                reason="REFUND_EXCEEDS_PAYMENT",
            )
        new_refunded = payment.refunded_minor + amount
        new_status = (
            PaymentStatus.REFUNDED if new_refunded == payment.amount_minor else PaymentStatus.PARTIALLY_REFUNDED
        )
        states.check(payment.status, new_status)
        if payment.payment_type is PaymentType.TOP_UP:
            creator_minor, fee_minor = 0, 0
        else:
            creator_minor, fee_minor = allocate_refund(
                payment.amount_minor, payment.creator_amount_minor, payment.refunded_minor, amount
            )

        # What is debited: the wallet a top-up filled, or the creator's payable (fenced, never negative) and the
        # platform's revenue (may go negative). What is credited: the payer's wallet, or the channel's clearing.
        # A top-up is refunded out of the wallet it filled (fenced: never below zero) back to the channel. A
        # purchase is refunded out of the creator's payable (fenced) and the platform's revenue (may go negative)
        # back to the payer's wallet, or to the channel's clearing account for a channel payment.
        if payment.payment_type is PaymentType.TOP_UP:
            sources = [(AccountKind.WALLET, payment.user_id, -amount, True)]
            destination = (AccountKind.CLEARING, payment.method.value)
        else:
            sources = [
                (AccountKind.PAYABLE, payment.payee_id, -creator_minor, True),
                (AccountKind.REVENUE, PLATFORM_SUBJECT, -fee_minor, False),
            ]
            sources = [source for source in sources if source[2] != 0]
            if payment.method is Method.WALLET:
                destination = (AccountKind.WALLET, payment.user_id)
            else:
                destination = (AccountKind.CLEARING, payment.method.value)
        resources = [lock_resource(kind, subject, payment.currency) for kind, subject, _, fenced in sources if fenced]
        with self._leases(*resources) as leases:
            now = self._clock()
            with self._db.write() as connection:
                changes = [
                    BalanceChange(
                        ledger.ensure_account(connection, kind, subject, payment.currency, now),
                        delta,
                        leases[lock_resource(kind, subject, payment.currency)] if fenced else None,
                    )
                    for kind, subject, delta, fenced in sources
                ]
                changes.append(
                    BalanceChange(ledger.ensure_account(connection, *destination, payment.currency, now), amount)
                )
                guarded = store.record_refund_on_payment(
                    connection, payment, new_status=new_status, new_refunded_minor=new_refunded, now=now
                )
                if not guarded:
                    raise ConcurrentChange(payment.payment_id)
                holder: list[RefundRecord] = []

                def write_rows(entry_id: str) -> None:
                    record = RefundRecord(
                        refund_id=command.refund_id,
                        payment_id=payment.payment_id,
                        amount_minor=amount,
                        currency=payment.currency,
                        creator_amount_minor=creator_minor,
                        platform_fee_minor=fee_minor,
                        reason=command.reason,
                        entry_id=entry_id,
                        created_at=now,
                        payment_status=new_status,
                    )
                    store.insert_refund(connection, caller.owner, record)
                    self._idempotency.record(connection, claim, command.refund_id, record.to_json(), now)
                    holder.append(record)

                self._move_money(
                    connection,
                    changes,
                    currency=payment.currency,
                    kind="refund",
                    owner=caller.owner,
                    payment_id=payment.payment_id,
                    reference_id=command.refund_id,
                    now=now,
                    write_rows=write_rows,
                    on_insufficient=lambda: FailedPrecondition(
                        f"cannot take the refund back from {payment.payee_id or payment.user_id}: its balance is "
                        "lower than its share of the refund (already paid out or spent)",
                        reason="INSUFFICIENT_FUNDS",
                    ),
                )
                return holder[0]

    # -- transfers -------------------------------------------------------------------------------------

    def transfer(self, caller: Caller, command: TransferCommand) -> TransferRecord:
        return self._keyed(
            caller,
            TRANSFER_SCOPE,
            command.transfer_id,
            request_hash(command),
            lambda claim: self._transfer_once(caller, command, claim),
            TransferRecord.from_json,
        )

    def _transfer_once(self, caller: Caller, command: TransferCommand, claim: Claim) -> TransferRecord:
        with self._db.read() as connection:
            source = ledger.find_account(connection, AccountKind.WALLET, command.from_user_id, command.currency)
        if source is None or source.balance_minor < command.amount_minor:
            raise self._insufficient(command.from_user_id, command.amount_minor, command.currency, source)
        source_lock = lock_resource(AccountKind.WALLET, command.from_user_id, command.currency)
        target_lock = lock_resource(AccountKind.WALLET, command.to_user_id, command.currency)
        # Both wallets, in canonical order: two opposite transfers between the same users cannot deadlock.
        with self._leases(source_lock, target_lock) as leases:
            lease = leases[source_lock]
            now = self._clock()
            with self._db.write() as connection:
                target = ledger.ensure_account(
                    connection, AccountKind.WALLET, command.to_user_id, command.currency, now
                )
                holder: list[TransferRecord] = []

                def write_rows(entry_id: str) -> None:
                    record = TransferRecord(
                        transfer_id=command.transfer_id,
                        from_user_id=command.from_user_id,
                        to_user_id=command.to_user_id,
                        amount_minor=command.amount_minor,
                        currency=command.currency,
                        entry_id=entry_id,
                        created_at=now,
                    )
                    store.insert_transfer(connection, caller.owner, record)
                    self._idempotency.record(connection, claim, command.transfer_id, record.to_json(), now)
                    holder.append(record)

                self._move_money(
                    connection,
                    [BalanceChange(source, -command.amount_minor, lease), BalanceChange(target, command.amount_minor)],
                    currency=command.currency,
                    kind="transfer",
                    owner=caller.owner,
                    payment_id=None,
                    reference_id=command.transfer_id,
                    now=now,
                    write_rows=write_rows,
                    on_insufficient=lambda: self._insufficient(
                        command.from_user_id, command.amount_minor, command.currency, None
                    ),
                )
                return holder[0]

    # -- history ---------------------------------------------------------------------------------------

    def list_transactions(self, caller: Caller, query: TransactionsQuery) -> TransactionsPage:
        """The caller's own postings to the user's wallets, newest first. The cursor is a posting id inside a
        signed page token (workers/codec/page_tokens.py) bound to the owner and the user, so entries written while a
        caller pages (all newer, higher ids) never shift or repeat the pages still to come."""
        before = NEWEST
        if query.page_token:
            cursor = self._page_tokens.read(caller.owner, query.user_id, query.page_token)
            if cursor is None:
                raise InvalidArgument([FieldViolation("page_token", PAGE_TOKEN_RULE)])
            before = cursor
        with self._db.read() as connection:
            rows = store.wallet_postings(
                connection, caller.owner, query.user_id, before_posting_id=before, limit=query.page_size + 1
            )
        page = rows[: query.page_size]
        more = len(rows) > query.page_size and bool(page)
        token = self._page_tokens.issue(caller.owner, query.user_id, page[-1].posting_id) if more else ""
        return TransactionsPage(page, token)

    # -- shared machinery ------------------------------------------------------------------------------

    @staticmethod
    def _insufficient(
        user_id: str, amount_minor: int, currency: str, wallet: ledger.Account | None
    ) -> InsufficientFunds:
        detail = "" if wallet is None else f" (available {wallet.balance_minor})"
        return InsufficientFunds(
            f"wallet of {user_id!r} holds less than {amount_minor} {currency}{detail}; "
            "top up first — the same id may be retried afterwards"
        )

    @contextmanager
    def _leases(self, *resources: str) -> Iterator[dict[str, LockLease]]:
        """Fenced leases on `resources`, taken in canonical (sorted) order so that two operations locking the
        same accounts never wait on each other in a cycle; always released, newest first."""
        taken: dict[str, LockLease] = {}
        try:
            for resource in sorted(set(resources)):
                taken[resource] = self._locks.acquire(resource, self._lock_lease_ms, self._lock_wait_ms)
            yield taken
        finally:
            for lease in reversed(list(taken.values())):
                self._locks.release_quietly(lease)

    def _move_money(
        self,
        connection: Connection,
        changes: list[BalanceChange],
        *,
        currency: str,
        kind: str,
        owner: str,
        payment_id: str | None,
        reference_id: str,
        now: datetime,
        write_rows: Callable[[str], None],
        on_insufficient: Callable[[], Exception] | None = None,
    ) -> str:
        """Apply `changes` as one balanced journal entry and call `write_rows(entry_id)` for the caller's rows."""
        changes = [c for c in changes if c.amount_minor != 0]
        # Every balance row is updated in one pass in account-id order, so two transactions can never hold one
        # account row each while waiting for the other's (a deadlock the database would break after a timeout).
        # Row locks last until commit, and hot accounts (platform revenue, a best-selling creator) are shared by
        # every purchase, so the updates go as late as the database allows. On PostgreSQL that is after the
        # inserts: the foreign-key check on postings takes FOR KEY SHARE, which does not block the UPDATE. On
        # MySQL/MariaDB that check takes a shared lock that two transactions could then both try to upgrade, so
        # there the updates come first. A refused debit raises and the whole transaction rolls back.
        ordered = sorted(changes, key=lambda c: c.account.account_id)

        def update_balances() -> None:
            for change in ordered:
                if change.lease is None:
                    if not ledger.apply_unfenced(connection, change.account, change.amount_minor):
                        raise balance_limit_exceeded(change.account, change.amount_minor)
                    continue
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

        updates_last = connection.dialect.name == "postgresql"
        if not updates_last:
            update_balances()
        entry_id = new_id("je")
        ledger.post_entry(
            connection,
            entry_id=entry_id,
            kind=kind,
            owner=owner,
            payment_id=payment_id,
            reference_id=reference_id,
            entry_postings=[ledger.Posting(c.account.account_id, c.amount_minor, currency) for c in changes],
            now=now,
        )
        write_rows(entry_id)
        if updates_last:
            update_balances()
        return entry_id

    def _keyed(
        self,
        caller: Caller,
        scope: str,
        key: str,
        fingerprint: str,
        attempt: Callable[[Claim], T],
        replay: Callable[[bytes], T],
        on_committed: Callable[[T], None] | None = None,
    ) -> T:
        with self._idempotency.claim(caller.owner, scope, key, fingerprint) as claim:
            if claim.replay is not None:
                return replay(claim.replay)
            for attempt_number in range(1, MAX_ATTEMPTS + 1):
                try:
                    result = attempt(claim)  # returns after its transaction committed
                    if on_committed is not None:
                        on_committed(result)
                    return result
                except StaleFence as stale:
                    log.warning("stale lock fence; retrying", extra={"fields": {"resource": stale.resource}})
                    self._count_retry("stale_fence")
                    self._locks.raise_fence(stale.resource, stale.database_fence)
                except ConcurrentChange:
                    self._count_retry("concurrent_change")  # another refund of the same payment committed first
                except IntegrityError:
                    # Lost a race on a unique key: the winner's result is the answer.
                    earlier = self._idempotency.lookup(caller.owner, scope, key, fingerprint)
                    if earlier is not None:
                        return replay(earlier)
                    raise
                except DBAPIError as error:
                    if not is_transient(error):
                        raise
                    self._count_retry("deadlock")  # rolled back by the database: nothing was written
                    if attempt_number < MAX_ATTEMPTS:
                        time.sleep(random.uniform(0.005, 0.05) * attempt_number)
        raise Unavailable(
            f"{scope} {key!r} could not be applied after {MAX_ATTEMPTS} attempts under contention; "
            f"nothing was moved — retry with the same {scope} id"
        )

    def _count_retry(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.ledger_retries.labels(reason).inc()

    def _count_payment(self, record: PaymentRecord) -> None:
        if self._metrics is None:
            return
        self._metrics.payments.labels(record.payment_type.value, record.method.value, record.status.value).inc()
        self._metrics.money_moved_minor.labels(record.payment_type.value, record.currency).inc(record.amount_minor)
