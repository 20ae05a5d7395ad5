"""The janitor: asks providers about attempts that are not settled (docs/channels.md, "Unknown states").

An attempt stays CREATED, PENDING or UNKNOWN when its outcome never reached us: a timeout, a crash between the
provider call and our commit, a notification that never came. One worker at a time (a Redis lease) queries the
provider for each attempt that is due, applies the answer through `confirmation.apply`, and otherwise backs off:
the first check after `first_check_s`, then doubling up to `max_check_s`. Each round is bounded.

"The provider has no such order" settles an attempt only when the create can no longer be in flight (CREATED or
UNKNOWN, older than the grace below): the order never reached the provider, so the payment FAILED and nothing was
charged. For a PENDING attempt it proves nothing (a redirect-style order exists only once the payer opens it);
expiry closes those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from runtime.job_metrics import JANITOR
from workers.channels.base import NOT_FOUND, ProviderState
from workers.domain.types import AttemptRecord, AttemptStatus, RefundStatus
from workers.operations import channel_refunds, confirmation
from workers.operations.context import Context
from workers.store import attempts
from workers.store import refunds as refund_rows

log = logging.getLogger(__name__)

JANITOR_LEASE = "janitor:attempts"
# The lease is short and a round stops taking new work well before it ends, so a worker killed mid-round holds
# the others up for one lease at most; a round that still overruns (a slow provider call) is harmless, since
# every transition is a guarded update.
JANITOR_LEASE_MS = 20_000
ROUND_BUDGET_S = 8.0
MAX_PER_ROUND = 200
NEVER_ARRIVED_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Backoff:
    first_check_s: float
    max_check_s: float

    def next_check(self, attempt: AttemptRecord, now: datetime) -> datetime:
        delay = min(self.max_check_s, self.first_check_s * 2 ** min(attempt.checks, 30))
        return now + timedelta(seconds=delay)


def run_once(ctx: Context, backoff: Backoff, limit: int = MAX_PER_ROUND) -> int:
    """One round, if no other worker is running one; returns how many attempts were settled."""
    lease = ctx.executor.locks.try_acquire(JANITOR_LEASE, lease_ms=JANITOR_LEASE_MS)
    if lease is None:
        return 0
    try:
        with ctx.job_round(JANITOR):
            settled = check_due(ctx, backoff, limit)
            ctx.job_lag(JANITOR, overdue_s(ctx))
            return settled
    finally:
        ctx.executor.locks.release_quietly(lease)


def overdue_s(ctx: Context) -> float:
    """How long the most overdue check (of an attempt or a refund) has been due (0: none is), after a round."""
    now = ctx.clock()
    with ctx.db.read() as connection:
        attempt = next(iter(attempts.due_for_check(connection, now, 1)), None)
        refund = next(iter(refund_rows.due_for_check(connection, now, 1)), None)
    due = [
        *([attempt.next_check_at or attempt.created_at] if attempt else []),
        *([refund.next_check_at or refund.record.created_at] if refund else []),
    ]
    return max(((now - moment).total_seconds() for moment in due), default=0.0)


def check_due(ctx: Context, backoff: Backoff, limit: int = MAX_PER_ROUND) -> int:
    deadline = time.monotonic() + ROUND_BUDGET_S
    now = ctx.clock()
    with ctx.db.read() as connection:
        due = attempts.due_for_check(connection, now, limit)
    settled = _check_refunds(ctx, backoff, limit, deadline)
    for attempt in due:
        if time.monotonic() > deadline:
            break  # the rest are still due: the next round takes them
        try:
            settled += _check(ctx, attempt, backoff)
        except Exception:  # one provider failing must not stop the round; the attempt is due again later
            log.exception("checking an attempt failed", extra={"fields": {"attempt_id": attempt.attempt_id}})
            with ctx.db.write() as connection:
                attempts.schedule_check(connection, attempt, backoff.next_check(attempt, ctx.clock()))
    return settled


def _check(ctx: Context, attempt: AttemptRecord, backoff: Backoff) -> bool:
    state = ctx.channels.get(attempt.method).query(attempt.attempt_id, attempt.created_at)
    now = ctx.clock()
    if _not_found(state):
        if attempt.status is AttemptStatus.PENDING or now - attempt.created_at < NEVER_ARRIVED_GRACE:
            state = ProviderState(AttemptStatus.UNKNOWN, out_trade_no=attempt.attempt_id)
        else:
            state = ProviderState(
                AttemptStatus.FAILED,
                out_trade_no=attempt.attempt_id,
                failure_reason="the order never reached the channel; nothing was charged",
            )
    after = confirmation.apply(ctx, attempt.attempt_id, state)
    with ctx.db.read() as connection:
        current = attempts.for_provider(connection, attempt.attempt_id)
    if current is not None and not current.status.settled:
        with ctx.db.write() as connection:
            attempts.schedule_check(connection, current, backoff.next_check(current, now))
        return False
    log.info("attempt settled by query", extra={"fields": {"payment_id": after.payment_id, "status": state.status}})
    return True


def _check_refunds(ctx: Context, backoff: Backoff, limit: int, deadline: float) -> int:
    """Pending refunds through providers whose answer never came: ask, apply, or ask again later."""
    with ctx.db.read() as connection:
        due = refund_rows.due_for_check(connection, ctx.clock(), limit)
    settled = 0
    for stored in due:
        if time.monotonic() > deadline:
            break
        try:
            after = channel_refunds.refresh(ctx, stored.record.out_refund_no)
        except Exception:  # one provider failing must not stop the round
            log.exception("checking a refund failed", extra={"fields": {"refund": stored.record.out_refund_no}})
            after = stored
        if after.record.status is RefundStatus.PENDING:
            delay = min(backoff.max_check_s, backoff.first_check_s * 2 ** min(stored.checks, 30))
            with ctx.db.write() as connection:
                refund_rows.schedule_check(
                    connection, stored.record.out_refund_no, ctx.clock() + timedelta(seconds=delay)
                )
        else:
            settled += 1
    return settled


def _not_found(state: ProviderState) -> bool:
    return state.status is AttemptStatus.FAILED and state.failure_reason == NOT_FOUND
