"""CreatePayment and TopUp: money in, from a learner's wallet or through a channel (docs/architecture.md).

A wallet purchase is one keyed transaction: the fenced wallet debit, the creator's and the platform's credits,
the payment row and the idempotency record commit together.

A channel payment is an intent collected by an attempt (docs/architecture.md, "Channels"):

1. one transaction writes the PENDING payment, its CREATED attempt and the idempotency record, and commits —
   so whatever happens next, there is a row that names the attempt the provider may be holding;
2. the provider is called (outside any transaction);
3. its answer is applied by `confirmation.apply` in a second transaction (money moves only on SUCCEEDED).

A repeated call with the same order id answers the payment as it is now, and first resumes an attempt whose
outcome was lost (a crash or a timeout between 1 and 3): the provider deduplicates on the attempt id, so asking
it again can never charge twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from runtime.failpoints import crash_here
from runtime.ids import new_id
from workers.channels.base import Channel, Order
from workers.domain.risk import Assessment, Decision
from workers.domain.types import (
    AccountKind,
    AttemptRecord,
    AttemptStatus,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentRecord,
    PaymentStatus,
    PaymentType,
    Scene,
    TopUpCommand,
    request_hash,
)
from workers.execution.group_commit import CommitterStopped
from workers.execution.idempotency import Claim
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.operations import confirmation, money, screening, vault_cards
from workers.operations.context import ORDER_SCOPE, Context, insufficient, lock_resource
from workers.operations.purchase_batch import PurchaseIntent, SinglePath
from workers.store import attempts, records

# How long the provider keeps an order open for the payer; the expiry sweeper closes it after payment_ttl_s.
PROVIDER_ORDER_TTL = timedelta(minutes=30)
CREATED_CHECK_DELAY = timedelta(seconds=30)
# The attempt of a channel payment held for review is never due for the janitor: no provider knows it yet. The
# release closes it (unsent) and opens a fresh one, so the provider's order lives from the release on.
HELD_ATTEMPT_CHECK_AT = datetime(9000, 1, 1, tzinfo=UTC)
# The scene of a payment whose caller named none (docs/api.md, "Channels").
DEFAULT_SCENE = {
    Method.ALIPAY: Scene.QR,
    Method.WECHAT_PAY: Scene.QR,
    Method.UNIONPAY: Scene.PAGE,
    Method.CARD: Scene.CARD,
    Method.SANDBOX: Scene.QR,
}


def create_payment(ctx: Context, caller: Caller, command: CreatePaymentCommand) -> PaymentRecord:
    if command.method is not Method.WALLET:
        return _through_channel(ctx, caller, command, PaymentType.PURCHASE)
    # Before the purchase can join a batch (docs/risk.md): only an allowed purchase is group-committed; one to
    # hold or deny takes the keyed path, which replays an earlier answer of its order id first.
    assessment = screening.assess(ctx, caller, command)
    if ctx.purchases is not None and assessment.decision is Decision.ALLOW:
        try:
            committed = ctx.purchases.submit(wallet_intent(ctx, caller, command))
        except (SinglePath, CommitterStopped):
            pass
        else:
            assert isinstance(committed, PaymentRecord)
            return committed
    return wallet_purchase_one_at_a_time(ctx, caller, command, assessment)


def submit_wallet_purchase(
    ctx: Context, caller: Caller, command: CreatePaymentCommand
) -> asyncio.Future[object] | None:
    """From the worker's event loop: hand a wallet purchase to the group committer (docs/ledger.md, "Group
    commit") and get a future of its outcome; None when the purchase is not a wallet one or the worker commits
    one at a time. The future raises SinglePath when the batch passed the purchase on: then
    `wallet_purchase_one_at_a_time` settles it."""
    if command.method is not Method.WALLET or ctx.purchases is None or screening.needs_io(ctx):
        return None  # risk rules that ask Redis or the ledger are assessed on the thread pool (create_payment)
    assessment = screening.assess(ctx, caller, command, count=False)  # pure rules: microseconds, on the loop
    if assessment.decision is not Decision.ALLOW:
        return None  # create_payment holds or denies it
    screening.count(ctx, assessment, command)
    return ctx.purchases.submit_async(wallet_intent(ctx, caller, command))


def wallet_intent(ctx: Context, caller: Caller, command: CreatePaymentCommand) -> PurchaseIntent:
    claim = Claim(caller.owner, ORDER_SCOPE, command.order_id, request_hash(command))
    record = _new_payment(ctx, caller, command, PaymentType.PURCHASE, claim, ctx.clock())
    return PurchaseIntent(record, claim, lock_resource(AccountKind.WALLET, command.user_id, command.currency))


def wallet_purchase_one_at_a_time(
    ctx: Context, caller: Caller, command: CreatePaymentCommand, assessment: Assessment | None = None
) -> PaymentRecord:
    """Claim the key (in-flight guard), wait for the wallet lock, one transaction: the path of a purchase the
    group committer passed on, of one the risk engine holds or denies, and of every purchase when there is no
    committer. Without an `assessment` the purchase is assessed here, once its key is claimed."""
    decided = [assessment] if assessment is not None else []

    def first_time(claim: Claim) -> PaymentRecord:
        if not decided:  # once, even when a stale fence makes the executor run this again
            # Counted in the metrics already: the only caller without an assessment is the worker's fallback
            # after submit_wallet_purchase, which counted it when it let the purchase into the batch.
            decided.append(screening.assess(ctx, caller, command, count=False))
        return _wallet_purchase(ctx, caller, command, claim, decided[0])

    return ctx.executor.run(
        caller,
        ORDER_SCOPE,
        command.order_id,
        request_hash(command),
        first_time,
        lambda _claim, stored: PaymentRecord.from_json(stored),
    )


def top_up(ctx: Context, caller: Caller, command: TopUpCommand) -> PaymentRecord:
    return _through_channel(ctx, caller, command, PaymentType.TOP_UP)


def _wallet_purchase(
    ctx: Context, caller: Caller, command: CreatePaymentCommand, claim: Claim, assessment: Assessment
) -> PaymentRecord:
    screening.refuse_if_denied(assessment)
    if assessment.decision is Decision.REVIEW:
        held = screening.held(_new_payment(ctx, caller, command, PaymentType.PURCHASE, claim, ctx.clock()), assessment)
        return _hold(ctx, held, None, claim)

    def write(connection: Connection, record: PaymentRecord, now: datetime) -> None:
        records.insert_payment(connection, record)
        ctx.executor.idempotency.record(connection, claim, record.payment_id, record.to_json(), now)

    return debit_wallet(ctx, lambda now: _new_payment(ctx, caller, command, PaymentType.PURCHASE, claim, now), write)


def debit_wallet(
    ctx: Context,
    purchase: Callable[[datetime], PaymentRecord],
    write: Callable[[Connection, PaymentRecord, datetime], None],
) -> PaymentRecord:
    """A wallet purchase's money, fenced: the wallet debit and the creator's and platform's credits in one entry;
    `write` records the SUCCEEDED payment in the same transaction. Used by a new purchase (`purchase(now)` is the
    new payment) and by a release after risk review (the held payment; `write` is its guarded transition)."""
    record = purchase(ctx.clock())
    with ctx.db.read() as connection:
        wallet = accounts.find_account(connection, AccountKind.WALLET, record.user_id, record.currency)
    if wallet is None or wallet.balance_minor < record.amount_minor:
        # A fast answer without taking the lock; the fenced write below is what actually guarantees it.
        raise insufficient(record.user_id, record.amount_minor, record.currency, wallet)
    resource = lock_resource(AccountKind.WALLET, record.user_id, record.currency)
    with ctx.executor.leases(resource) as leases:
        now = ctx.clock()
        record = purchase(now)
        with ctx.db.write() as connection:
            changes = [
                BalanceChange(wallet, -record.amount_minor, leases[resource]),
                *money.purchase_credits(
                    connection,
                    record.payee_id,
                    record.creator_amount_minor,
                    record.platform_fee_minor,
                    record.currency,
                    now,
                ),
            ]
            entry = Entry(
                kind=PaymentType.PURCHASE.value,
                owner=record.owner,
                payment_id=record.payment_id,
                reference_id=record.payment_id,
                currency=record.currency,
                now=now,
                on_insufficient=lambda: insufficient(record.user_id, record.amount_minor, record.currency, None),
            )
            with move(connection, changes, entry) as entry_id:
                record = replace(record, status=PaymentStatus.SUCCEEDED, entry_id=entry_id)
                write(connection, record, now)
    ctx.count_payment(record)
    return record


def _hold(ctx: Context, payment: PaymentRecord, attempt: AttemptRecord | None, claim: Claim) -> PaymentRecord:
    """A payment the risk engine holds for review (docs/risk.md): its row (IN_REVIEW), the attempt a channel
    payment will use once released (written, never sent: no provider is contacted) and the idempotency record,
    in one transaction. No money moves."""
    with ctx.db.write() as connection:
        records.insert_payment(connection, payment)
        if attempt is not None:
            attempts.insert(connection, attempt)
        ctx.executor.idempotency.record(connection, claim, payment.payment_id, payment.to_json(), payment.created_at)
    ctx.count_payment(payment)
    return payment


def _through_channel(
    ctx: Context, caller: Caller, command: TopUpCommand | CreatePaymentCommand, payment_type: PaymentType
) -> PaymentRecord:
    channel = ctx.channels.get(command.method)  # UNIMPLEMENTED before anything is claimed or written
    channel.check_available()  # and UNAVAILABLE while its circuit is open
    # NOT_FOUND for a card token that is not the caller's, before anything is claimed or written.
    card_masked = vault_cards.masked_card(ctx, caller, command.card_token)
    started = time.perf_counter()
    waited = Stopwatch()
    try:
        return ctx.executor.run(
            caller,
            ORDER_SCOPE,
            command.order_id,
            request_hash(command),
            lambda claim: _open(ctx, channel, caller, command, payment_type, claim, waited, card_masked),
            lambda _claim, stored: _resume(ctx, channel, PaymentRecord.from_json(stored), waited),
        )
    finally:
        # Our own processing: the whole call but the time spent waiting for the provider.
        ctx.observe_stage(command.method.value, "processing", time.perf_counter() - started - waited.seconds)


def _open(
    ctx: Context,
    channel: Channel,
    caller: Caller,
    command: TopUpCommand | CreatePaymentCommand,
    payment_type: PaymentType,
    claim: Claim,
    waited: Stopwatch,
    card_masked: str,
) -> PaymentRecord:
    assessment = screening.assess(ctx, caller, command)  # after the claim: a replay is never assessed
    screening.refuse_if_denied(assessment)
    now = ctx.clock()
    payment = _new_payment(ctx, caller, command, payment_type, claim, now)
    scene, payer = command.scene or DEFAULT_SCENE[command.method].value, command.card_token or command.payer_openid
    if assessment.decision is Decision.REVIEW:
        # The attempt keeps what the provider will need (scene, payer) until the release; never due for the janitor.
        held = new_attempt(payment, scene, payer, now, next_check_at=HELD_ATTEMPT_CHECK_AT, card_masked=card_masked)
        return _hold(ctx, replace(screening.held(payment, assessment), attempt_id=held.attempt_id), held, claim)
    attempt = new_attempt(payment, scene, payer, now, next_check_at=now + CREATED_CHECK_DELAY, card_masked=card_masked)
    payment = replace(payment, attempt_id=attempt.attempt_id)
    with ctx.db.read() as connection:
        money.check_room(connection, payment)
    with ctx.db.write() as connection:
        records.insert_payment(connection, payment)
        attempts.insert(connection, attempt)
        ctx.executor.idempotency.record(connection, claim, payment.payment_id, payment.to_json(), now)
    result = advance(ctx, channel, payment, attempt, waited)
    ctx.count_payment(result)
    return result


def new_attempt(
    payment: PaymentRecord, scene: str, payer: str, now: datetime, *, next_check_at: datetime, card_masked: str = ""
) -> AttemptRecord:
    """A CREATED attempt at the payment's channel, written before the provider is called."""
    return AttemptRecord(
        # Letters and digits only: the one id shape every provider accepts as its order number (UnionPay's
        # orderId allows no underscore).
        attempt_id=new_id("att", separator=""),
        payment_id=payment.payment_id,
        owner=payment.owner,
        method=payment.method,
        status=AttemptStatus.CREATED,
        scene=scene,
        payer=payer,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        trade_no="",
        failure_reason="",
        pay_url="",
        qr_code="",
        prepay_id="",
        created_at=now,
        updated_at=now,
        # Not before the provider call could have ended: the janitor must not race it.
        next_check_at=next_check_at,
        checks=0,
        card_masked=card_masked,
    )


def _resume(ctx: Context, channel: Channel, stored: PaymentRecord, waited: Stopwatch) -> PaymentRecord:
    """A repeated call: the payment as it is now, after resuming an attempt whose outcome was lost (CREATED: the
    call may never have left; UNKNOWN: its answer never came)."""
    with ctx.db.read() as connection:
        payment = records.payment_by_id(connection, stored.owner, stored.payment_id)
        attempt = attempts.by_id(connection, stored.owner, stored.attempt_id) if stored.attempt_id else None
    if payment is None:  # cannot happen: the record and the payment commit together
        raise LookupError(f"payment {stored.payment_id} of an idempotency record is missing")
    if payment.status is PaymentStatus.IN_REVIEW:
        return payment  # held for review: no provider is contacted until an operator releases it
    if attempt is None or attempt.status not in (AttemptStatus.CREATED, AttemptStatus.UNKNOWN):
        return payment
    # Open it again: the provider deduplicates by the attempt id, and answers with what the payer needs (the QR
    # code, the pay URL) — which a query would not give back after a lost answer.
    return advance(ctx, channel, payment, attempt, waited)


def advance(
    ctx: Context, channel: Channel, payment: PaymentRecord, attempt: AttemptRecord, waited: Stopwatch
) -> PaymentRecord:
    """Ask the provider to open the attempt's order and apply its answer."""
    order = Order(
        out_trade_no=attempt.attempt_id,
        amount_minor=attempt.amount_minor,
        currency=attempt.currency,
        subject=payment.description or f"order {payment.order_id}",
        notify_url="",
        scene=Scene(attempt.scene),
        payer=attempt.payer,
        created_at=attempt.created_at,
        expires_at=attempt.created_at + PROVIDER_ORDER_TTL,
        card=vault_cards.revealed_card(ctx, attempt),  # a card from the vault: decrypted only for this call
    )
    with waited:
        state = channel.open(order)
    ctx.observe_stage(attempt.method.value, "provider_call", waited.last)
    # The provider may hold the order now, and nothing of its answer is committed yet: a crash here must leave a
    # recoverable attempt (CREATED, resumed by a retry or the janitor), never a charge nobody recorded.
    crash_here("after_provider_call")
    return confirmation.apply(ctx, attempt.attempt_id, state)


class Stopwatch:
    """Time spent inside `with` blocks (the provider calls of one request), in total and the last one."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.last = 0.0
        self._started = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.last = time.perf_counter() - self._started
        self.seconds += self.last


def _new_payment(
    ctx: Context,
    caller: Caller,
    command: TopUpCommand | CreatePaymentCommand,
    payment_type: PaymentType,
    claim: Claim,
    now: datetime,
) -> PaymentRecord:
    """The PENDING payment a command asks for, with its price breakdown and split."""
    purchase = command if isinstance(command, CreatePaymentCommand) else None
    if purchase is None:
        creator_minor, fee_minor = 0, 0
    else:
        creator_minor, fee_minor = money.split(purchase.amount_minor, purchase.payee_id, ctx.platform_fee_bps)
    return PaymentRecord(
        payment_id=new_id("pay"),
        owner=caller.owner,
        order_id=claim.key,
        payment_type=payment_type,
        user_id=command.user_id,
        payee_id=purchase.payee_id if purchase else "",
        amount_minor=command.amount_minor,
        currency=command.currency,
        method=command.method,
        status=PaymentStatus.PENDING,
        refunded_minor=0,
        failure_reason="",
        description=purchase.description if purchase else "",
        entry_id=None,
        created_at=now,
        updated_at=now,
        list_price_minor=purchase.list_price_minor if purchase else command.amount_minor,
        discount_minor=purchase.discount_minor if purchase else 0,
        tax_minor=purchase.tax_minor if purchase else 0,
        creator_amount_minor=creator_minor,
        platform_fee_minor=fee_minor,
    )
