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
from dataclasses import replace
from datetime import datetime, timedelta

from runtime.failpoints import crash_here
from runtime.ids import new_id
from workers.channels.base import Channel, Order, PaymentCard
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
from workers.operations import confirmation, money
from workers.operations.context import ORDER_SCOPE, Context, insufficient, lock_resource
from workers.operations.purchase_batch import PurchaseIntent, SinglePath
from workers.store import attempts, records
from workers.vault.cards import TOKEN_PREFIX as VAULT_TOKEN_PREFIX
from workers.vault.cards import card_not_found

# How long the provider keeps an order open for the payer; the expiry sweeper closes it after payment_ttl_s.
PROVIDER_ORDER_TTL = timedelta(minutes=30)
CREATED_CHECK_DELAY = timedelta(seconds=30)
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
    if ctx.purchases is not None:
        try:
            committed = ctx.purchases.submit(wallet_intent(ctx, caller, command))
        except (SinglePath, CommitterStopped):
            pass
        else:
            assert isinstance(committed, PaymentRecord)
            return committed
    return wallet_purchase_one_at_a_time(ctx, caller, command)


def submit_wallet_purchase(
    ctx: Context, caller: Caller, command: CreatePaymentCommand
) -> asyncio.Future[object] | None:
    """From the worker's event loop: hand a wallet purchase to the group committer (docs/ledger.md, "Group
    commit") and get a future of its outcome; None when the purchase is not a wallet one or the worker commits
    one at a time. The future raises SinglePath when the batch passed the purchase on: then
    `wallet_purchase_one_at_a_time` settles it."""
    if command.method is not Method.WALLET or ctx.purchases is None:
        return None
    return ctx.purchases.submit_async(wallet_intent(ctx, caller, command))


def wallet_intent(ctx: Context, caller: Caller, command: CreatePaymentCommand) -> PurchaseIntent:
    claim = Claim(caller.owner, ORDER_SCOPE, command.order_id, request_hash(command))
    record = _new_payment(ctx, caller, command, PaymentType.PURCHASE, claim, ctx.clock())
    return PurchaseIntent(record, claim, lock_resource(AccountKind.WALLET, command.user_id, command.currency))


def wallet_purchase_one_at_a_time(ctx: Context, caller: Caller, command: CreatePaymentCommand) -> PaymentRecord:
    """Claim the key (in-flight guard), wait for the wallet lock, one transaction: the path of a purchase the
    group committer passed on, and of every purchase when there is no committer."""
    return ctx.executor.run(
        caller,
        ORDER_SCOPE,
        command.order_id,
        request_hash(command),
        lambda claim: _wallet_purchase(ctx, caller, command, claim),
        lambda _claim, stored: PaymentRecord.from_json(stored),
    )


def top_up(ctx: Context, caller: Caller, command: TopUpCommand) -> PaymentRecord:
    return _through_channel(ctx, caller, command, PaymentType.TOP_UP)


def _wallet_purchase(ctx: Context, caller: Caller, command: CreatePaymentCommand, claim: Claim) -> PaymentRecord:
    with ctx.db.read() as connection:
        wallet = accounts.find_account(connection, AccountKind.WALLET, command.user_id, command.currency)
    if wallet is None or wallet.balance_minor < command.amount_minor:
        # A fast answer without taking the lock; the fenced write below is what actually guarantees it.
        raise insufficient(command.user_id, command.amount_minor, command.currency, wallet)
    resource = lock_resource(AccountKind.WALLET, command.user_id, command.currency)
    with ctx.executor.leases(resource) as leases:
        now = ctx.clock()
        record = _new_payment(ctx, caller, command, PaymentType.PURCHASE, claim, now)
        with ctx.db.write() as connection:
            changes = [
                BalanceChange(wallet, -command.amount_minor, leases[resource]),
                *money.purchase_credits(
                    connection,
                    command.payee_id,
                    record.creator_amount_minor,
                    record.platform_fee_minor,
                    command.currency,
                    now,
                ),
            ]
            entry = Entry(
                kind=PaymentType.PURCHASE.value,
                owner=caller.owner,
                payment_id=record.payment_id,
                reference_id=record.payment_id,
                currency=command.currency,
                now=now,
                on_insufficient=lambda: insufficient(command.user_id, command.amount_minor, command.currency, None),
            )
            with move(connection, changes, entry) as entry_id:
                record = replace(record, status=PaymentStatus.SUCCEEDED, entry_id=entry_id)
                records.insert_payment(connection, record)
                ctx.executor.idempotency.record(connection, claim, record.payment_id, record.to_json(), now)
    ctx.count_payment(record)
    return record


def _through_channel(
    ctx: Context, caller: Caller, command: TopUpCommand | CreatePaymentCommand, payment_type: PaymentType
) -> PaymentRecord:
    channel = ctx.channels.get(command.method)  # UNIMPLEMENTED before anything is claimed or written
    channel.check_available()  # and UNAVAILABLE while its circuit is open
    card_masked = _vault_card(ctx, caller, command.card_token)  # and NOT_FOUND for a card token not the caller's
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
    now = ctx.clock()
    payment = _new_payment(ctx, caller, command, payment_type, claim, now)
    attempt = AttemptRecord(
        # Letters and digits only: the one id shape every provider accepts as its order number (UnionPay's
        # orderId allows no underscore).
        attempt_id=new_id("att", separator=""),
        payment_id=payment.payment_id,
        owner=caller.owner,
        method=command.method,
        status=AttemptStatus.CREATED,
        scene=command.scene or DEFAULT_SCENE[command.method].value,
        payer=command.card_token or command.payer_openid,
        amount_minor=command.amount_minor,
        currency=command.currency,
        trade_no="",
        failure_reason="",
        pay_url="",
        qr_code="",
        prepay_id="",
        created_at=now,
        updated_at=now,
        # Not before the provider call below could have ended: the janitor must not race it.
        next_check_at=now + CREATED_CHECK_DELAY,
        checks=0,
        card_masked=card_masked,
    )
    payment = replace(payment, attempt_id=attempt.attempt_id)
    with ctx.db.read() as connection:
        money.check_room(connection, payment)
    with ctx.db.write() as connection:
        records.insert_payment(connection, payment)
        attempts.insert(connection, attempt)
        ctx.executor.idempotency.record(connection, claim, payment.payment_id, payment.to_json(), now)
    result = _advance(ctx, channel, payment, attempt, waited)
    ctx.count_payment(result)
    return result


def _resume(ctx: Context, channel: Channel, stored: PaymentRecord, waited: Stopwatch) -> PaymentRecord:
    """A repeated call: the payment as it is now, after resuming an attempt whose outcome was lost (CREATED: the
    call may never have left; UNKNOWN: its answer never came)."""
    with ctx.db.read() as connection:
        payment = records.payment_by_id(connection, stored.owner, stored.payment_id)
        attempt = attempts.by_id(connection, stored.owner, stored.attempt_id) if stored.attempt_id else None
    if payment is None:  # cannot happen: the record and the payment commit together
        raise LookupError(f"payment {stored.payment_id} of an idempotency record is missing")
    if attempt is None or attempt.status not in (AttemptStatus.CREATED, AttemptStatus.UNKNOWN):
        return payment
    # Open it again: the provider deduplicates by the attempt id, and answers with what the payer needs (the QR
    # code, the pay URL) — which a query would not give back after a lost answer.
    return _advance(ctx, channel, payment, attempt, waited)


def _advance(
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
        card=_revealed_card(ctx, attempt),  # a card from the vault: decrypted only for this call
    )
    with waited:
        state = channel.open(order)
    ctx.observe_stage(attempt.method.value, "provider_call", waited.last)
    # The provider may hold the order now, and nothing of its answer is committed yet: a crash here must leave a
    # recoverable attempt (CREATED, resumed by a retry or the janitor), never a charge nobody recorded.
    crash_here("after_provider_call")
    return confirmation.apply(ctx, attempt.attempt_id, state)


def _vault_card(ctx: Context, caller: Caller, card_token: str) -> str:
    """The masked card ("**** 4242") of a Paygate card token; "" for a processor token or none."""
    if not card_token.startswith(VAULT_TOKEN_PREFIX):
        return ""
    found = ctx.vault.find(caller.owner, card_token) if ctx.vault is not None else None
    if found is None:
        raise card_not_found()
    return found.masked


def _revealed_card(ctx: Context, attempt: AttemptRecord) -> PaymentCard | None:
    if ctx.vault is None or not attempt.payer.startswith(VAULT_TOKEN_PREFIX):
        return None
    card = ctx.vault.reveal(attempt.owner, attempt.payer)
    return PaymentCard(card.number, card.exp_month, card.exp_year)


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
