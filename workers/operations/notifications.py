"""A provider's callback, verified and applied exactly once (docs/channels.md, "Notifications").

The HTTP edge (notifications/) has already stored the request as received. Here, in order:

1. verify it with the provider's protocol: signature, for WeChat the ±300 s timestamp window, decryption;
2. refuse a nonce that already signed a different body (a replayed signature on forged content);
3. match it to our attempt by out_trade_no, and cross-check merchant id, amount and currency exactly;
4. apply it through `confirmation.apply` — a duplicate finds the work done and changes nothing;
5. record the verdict on the stored row and answer in the provider's own format.

Anything that fails 1-3 moves nothing, is kept with its reason, counted, and gets the provider's failure answer
(so a genuine provider retries, and an operator can review it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from runtime.errors import FailedPrecondition, NotFound
from workers.channels.base import (
    HttpReply,
    Notification,
    NotificationKind,
    NotificationRejected,
    Provider,
    ProviderRefund,
)
from workers.domain.types import AttemptRecord, Method, RefundStatus
from workers.operations import channel_refunds, confirmation
from workers.operations.context import Context
from workers.store import attempts, notifications, records
from workers.store import refunds as refund_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # applied | duplicate | rejected
    reason: str
    attempt_id: str | None


class Mismatch(Exception):
    def __init__(self, reason: str, attempt_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempt_id = attempt_id


def handle(ctx: Context, method: Method, notification_id: int) -> HttpReply:
    """Verify and apply stored callback `notification_id` of `method`; the answer for the provider."""
    started = time.perf_counter()
    try:
        return _handle(ctx, method, notification_id)
    finally:
        ctx.observe_stage(method.value, "notification", time.perf_counter() - started)


def _handle(ctx: Context, method: Method, notification_id: int) -> HttpReply:
    provider = ctx.channels.provider(method)
    with ctx.db.read() as connection:
        received = notifications.load(connection, notification_id)
    if provider is None or received is None or received.channel != method.value:
        raise NotFound(f"no stored {method.value} notification {notification_id}")
    if received.verdict in ("applied", "duplicate"):
        return provider.acknowledge(True)  # the edge handed it over twice: it is done
    try:
        note = provider.read_notification(received.headers, received.body, ctx.clock())
        verdict = _apply(ctx, provider, method, note, received.body)
    except NotificationRejected as rejected:
        verdict = Verdict("rejected", rejected.reason, None)
    except Mismatch as mismatch:
        verdict = Verdict("rejected", mismatch.reason, mismatch.attempt_id)
    with ctx.db.write() as connection:
        notifications.record_verdict(
            connection, notification_id, verdict.verdict, verdict.reason, verdict.attempt_id, ctx.clock()
        )
    if ctx.metrics is not None:
        ctx.metrics.channel_notifications.labels(method.value, verdict.verdict, verdict.reason).inc()
    if verdict.verdict == "rejected":
        log.warning(
            "notification rejected",
            extra={"fields": {"channel": method.value, "notification_id": notification_id, "reason": verdict.reason}},
        )
    return provider.acknowledge(verdict.verdict != "rejected")


def _apply(ctx: Context, provider: Provider, method: Method, note: Notification, body: bytes) -> Verdict:
    nonces = ctx.notification_nonces
    if note.nonce and nonces is not None and not nonces.acceptable(method.value, note.nonce, body):
        raise Mismatch("nonce_reused")
    if note.kind is NotificationKind.REFUND and note.refund is not None:
        return _apply_refund(ctx, provider, method, note.refund)
    if note.payment is None:
        raise Mismatch("malformed")
    state = note.payment
    with ctx.db.read() as connection:
        attempt = attempts.for_provider(connection, state.out_trade_no)
    if attempt is None or attempt.method is not method:
        raise Mismatch("unknown_order")
    _cross_check(provider, attempt, note)
    before = attempt.status
    try:
        confirmation.apply(ctx, attempt.attempt_id, state)
    except FailedPrecondition as refused:  # an illegal transition or a mismatch found while applying
        raise Mismatch(refused.reason.lower(), attempt.attempt_id) from refused
    return Verdict("duplicate" if state.status is before else "applied", "", attempt.attempt_id)


def _cross_check(provider: Provider, attempt: AttemptRecord, note: Notification) -> None:
    state = note.payment
    assert state is not None
    if state.merchant_id and state.merchant_id != provider.merchant_id:
        raise Mismatch("wrong_merchant", attempt.attempt_id)
    if state.amount_minor is not None and state.amount_minor != attempt.amount_minor:
        raise Mismatch("amount_mismatch", attempt.attempt_id)
    if state.currency and state.currency != attempt.currency:
        raise Mismatch("currency_mismatch", attempt.attempt_id)


def _apply_refund(ctx: Context, provider: Provider, method: Method, refund: ProviderRefund) -> Verdict:
    with ctx.db.read() as connection:
        stored = refund_rows.for_provider(connection, refund.out_refund_no)
        payment = records.payment_by_id(connection, stored.owner, stored.record.payment_id) if stored else None
    if stored is None or payment is None or payment.method is not method:
        raise Mismatch("unknown_refund")
    if refund.merchant_id and refund.merchant_id != provider.merchant_id:
        raise Mismatch("wrong_merchant", payment.attempt_id)
    if refund.currency and refund.currency != stored.record.currency:
        raise Mismatch("currency_mismatch", payment.attempt_id)
    before = stored.record.status
    try:
        after = channel_refunds.apply(ctx, refund.out_refund_no, refund)
    except FailedPrecondition as refused:
        raise Mismatch(refused.reason.lower(), payment.attempt_id) from refused
    changed = before is RefundStatus.PENDING and after.record.status is not RefundStatus.PENDING
    return Verdict("applied" if changed else "duplicate", "", payment.attempt_id)
