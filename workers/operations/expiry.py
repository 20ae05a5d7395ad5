"""Expiry: PENDING payments past their time-to-live are closed — at the channel first, then here.

Closing at the channel first matters: if we closed only locally, the payer could still pay the provider's open
order, and the money would arrive for a payment we had given up on. The provider's answer to the close goes
through `confirmation.apply` like any other: CLOSED closes the payment; SUCCEEDED (paid just before the close)
settles it. One worker sweeps at a time (a Redis lease), and the guarded updates make a double sweep harmless.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from runtime.job_metrics import EXPIRY_SWEEPER
from workers.channels.base import AttemptStatus, ProviderState
from workers.domain import states
from workers.domain.types import PaymentStatus
from workers.operations import confirmation
from workers.operations.context import Context
from workers.store import attempts, records

log = logging.getLogger(__name__)

SWEEPER_LEASE = "sweeper:expiry"
# Short, with a bounded round, for the same reason as the janitor's (janitor.py).
SWEEPER_LEASE_MS = 20_000
ROUND_BUDGET_S = 8.0
MAX_PER_ROUND = 500


def sweep_once(ctx: Context, ttl_s: int) -> int:
    """One sweeper round, if no other worker is sweeping right now."""
    lease = ctx.executor.locks.try_acquire(SWEEPER_LEASE, lease_ms=SWEEPER_LEASE_MS)
    if lease is None:
        return 0
    try:
        with ctx.job_round(EXPIRY_SWEEPER):
            closed = close_expired(ctx, ttl_s)
            ctx.job_lag(EXPIRY_SWEEPER, overdue_s(ctx, ttl_s))
            return closed
    finally:
        ctx.executor.locks.release_quietly(lease)


def overdue_s(ctx: Context, ttl_s: int) -> float:
    """How long past its time to live the oldest PENDING payment still is (0: none is), after a round."""
    cutoff = ctx.clock() - timedelta(seconds=ttl_s)
    with ctx.db.read() as connection:
        oldest = records.expired_pending_payments(connection, cutoff, 1)
        payment = records.payment_by_id(connection, *oldest[0]) if oldest else None
        attempt = (
            attempts.by_id(connection, payment.owner, payment.attempt_id) if payment and payment.attempt_id else None
        )
    if payment is None:
        return 0.0
    pending_since = attempt.created_at if attempt is not None else payment.created_at  # its time runs from there
    return max(0.0, (cutoff - pending_since).total_seconds())


def close_expired(ctx: Context, ttl_s: int, limit: int = MAX_PER_ROUND) -> int:
    """Close PENDING payments older than `ttl_s` (at most `limit` per call); returns how many closed."""
    now = ctx.clock()
    with ctx.db.read() as connection:
        expired = records.expired_pending_payments(connection, now - timedelta(seconds=ttl_s), limit)
    closed = 0
    deadline = time.monotonic() + ROUND_BUDGET_S
    for owner, payment_id in expired:
        if time.monotonic() > deadline:
            break  # the rest are still expired: the next round takes them
        try:
            closed += _close_one(ctx, owner, payment_id, ttl_s)
        except Exception:  # one payment's channel failing must not stop the round; the next round retries it
            log.exception("closing an expired payment failed", extra={"fields": {"payment_id": payment_id}})
    return closed


def _close_one(ctx: Context, owner: str, payment_id: str, ttl_s: int) -> bool:
    reason = f"not confirmed by the channel within {ttl_s} s; closed"
    states.check(PaymentStatus.PENDING, PaymentStatus.CLOSED)
    with ctx.db.read() as connection:
        payment = records.payment_by_id(connection, owner, payment_id)
        attempt = attempts.by_id(connection, owner, payment.attempt_id) if payment and payment.attempt_id else None
    if payment is None:
        return False
    if attempt is None:  # a payment from before attempts existed (migration 0004): nothing to close elsewhere
        with ctx.db.write() as connection:
            return records.transition_payment(
                connection,
                owner,
                payment_id,
                expected=PaymentStatus.PENDING,
                new=PaymentStatus.CLOSED,
                entry_id=None,
                failure_reason=reason,
                refunded_minor=0,
                now=ctx.clock(),
            )
    if attempt.created_at > ctx.clock() - timedelta(seconds=ttl_s):
        return False  # released after a risk review (docs/risk.md): its time to be paid runs from the release
    state = ctx.channels.get(attempt.method).close(attempt.attempt_id, attempt.trade_no, attempt.created_at)
    # CLOSED: closed at the provider. PENDING: the provider has no way to close it (UnionPay's orders only time
    # out there): we close it here anyway, and money the payer still sends is late money, refunded through the
    # provider. UNKNOWN leaves it for the next round; SUCCEEDED (paid just before the close) settles it.
    if state.status in (AttemptStatus.CLOSED, AttemptStatus.PENDING):
        state = ProviderState(AttemptStatus.CLOSED, out_trade_no=attempt.attempt_id, failure_reason=reason)
    return confirmation.apply(ctx, attempt.attempt_id, state).status is PaymentStatus.CLOSED
