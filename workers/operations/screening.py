"""The risk check of a payment that brings or moves money (docs/risk.md): gather the facts the rules in force
need — at most one Redis call for velocity and one ledger read for the account's age, each only when a rule asks
for it — and evaluate them. Acting on the outcome is the payment pipeline's: DENY is refused before anything is
written, REVIEW holds the payment, ALLOW goes on (workers/operations/payments.py).
"""

from __future__ import annotations

from dataclasses import replace

from runtime.errors import RiskDenied
from workers.domain.risk import ALLOWED, Assessment, Decision, Facts, RuleSet, evaluate
from workers.domain.types import Caller, CreatePaymentCommand, PaymentRecord, PaymentStatus, TopUpCommand
from workers.ledger import accounts
from workers.operations.context import Context

MAX_REASONS_CHARS = 2048  # the payments.risk_reasons column


def needs_io(ctx: Context) -> bool:
    """Whether assessing needs Redis or the database (then it runs on the thread pool, not on the event loop)."""
    if ctx.risk is None:
        return False
    rules = ctx.risk.rules()
    return rules.needs_redis or rules.needs_account_age


def assess(
    ctx: Context, caller: Caller, command: CreatePaymentCommand | TopUpCommand, *, count: bool = True
) -> Assessment:
    """The risk engine's decision on this payment (ALLOW when no rules run). Raises on a Redis or database
    failure: fail closed — nothing was written, and the caller retries with the same order id."""
    if ctx.risk is None:
        return ALLOWED
    rules = ctx.risk.rules()
    if not rules.rules:
        return ALLOWED
    assessment = evaluate(rules, _facts(ctx, caller, command, rules))
    if count:
        ctx.risk.count(assessment, command.method.value)
    return assessment


def count(ctx: Context, assessment: Assessment, command: CreatePaymentCommand | TopUpCommand) -> None:
    if ctx.risk is not None:
        ctx.risk.count(assessment, command.method.value)


def refuse_if_denied(assessment: Assessment) -> None:
    if assessment.decision is Decision.DENY:
        raise RiskDenied(assessment.reasons, assessment.score_text)


def held(payment: PaymentRecord, assessment: Assessment) -> PaymentRecord:
    """The payment as the risk engine holds it: IN_REVIEW, with why."""
    reasons = ""
    for name in assessment.reasons:  # whole names only, as many as the column holds
        candidate = f"{reasons},{name}" if reasons else name
        if len(candidate) > MAX_REASONS_CHARS:
            break
        reasons = candidate
    return replace(
        payment,
        status=PaymentStatus.IN_REVIEW,
        risk_decision=assessment.decision.value,
        risk_score=assessment.score_text,
        risk_reasons=reasons,
    )


def _facts(ctx: Context, caller: Caller, command: CreatePaymentCommand | TopUpCommand, rules: RuleSet) -> Facts:
    assert ctx.risk is not None
    now = ctx.clock()
    velocity: dict[tuple[int, str], tuple[int, int]] = {}
    if rules.needs_redis and ctx.risk.velocity is not None:
        # Keyed by owner and order id: assessing the same order id again never counts it twice.
        velocity = ctx.risk.velocity.record_and_count(
            command.user_id,
            f"{caller.owner}\n{command.order_id}",
            command.currency,
            command.amount_minor,
            now,
            rules.windows(),
        )
    age_s: float | None = None
    if rules.needs_account_age:
        with ctx.db.read() as connection:
            opened = accounts.first_wallet_created_at(connection, command.user_id)
        age_s = None if opened is None else (now - opened).total_seconds()
    context = command.risk
    return Facts(
        operation=command.operation,
        user_id=command.user_id,
        amount_minor=command.amount_minor,
        currency=command.currency,
        method=command.method,
        device_id=context.device_id,
        ip_address=context.ip_address,
        phone_fingerprint=ctx.risk.fingerprint(context.phone_number),
        region=context.region,
        velocity=velocity,
        account_age_s=age_s,
    )
