"""The payment and attempt state machines as tables (docs/ledger.md, "State machines"). Transitions are applied
as guarded updates (`UPDATE … WHERE status = :expected`), so two racing writers cannot both move the same row."""

from __future__ import annotations

from runtime.errors import IllegalTransition
from workers.domain.types import AttemptStatus, PaymentStatus

P = PaymentStatus

TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    P.PENDING: frozenset({P.SUCCEEDED, P.FAILED, P.CLOSED}),
    P.SUCCEEDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED}),
    # Another partial refund keeps it partially refunded; the last one completes it.
    P.PARTIALLY_REFUNDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED}),
    P.FAILED: frozenset(),
    P.CLOSED: frozenset(),
    P.REFUNDED: frozenset(),
    # Held by the risk engine (docs/risk.md): an operator releases it — a wallet purchase is then paid at once, a
    # channel payment waits for its payer (PENDING) — or refuses it (FAILED). The expiry sweeper leaves it alone.
    P.IN_REVIEW: frozenset({P.SUCCEEDED, P.PENDING, P.FAILED}),
}

REFUNDABLE = frozenset(status for status, targets in TRANSITIONS.items() if P.REFUNDED in targets)


def allowed(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


def check(current: PaymentStatus, target: PaymentStatus) -> None:
    if not allowed(current, target):
        raise IllegalTransition(f"a {current.name} payment cannot become {target.name}")


A = AttemptStatus

# What a provider's answer may do to an attempt. A settled attempt changes again only when the provider reports
# money we did not expect (a payment after we closed or gave up on it): that is recorded, then refunded.
ATTEMPT_TRANSITIONS: dict[AttemptStatus, frozenset[AttemptStatus]] = {
    A.CREATED: frozenset({A.PENDING, A.UNKNOWN, A.SUCCEEDED, A.FAILED, A.CLOSED}),
    A.UNKNOWN: frozenset({A.PENDING, A.SUCCEEDED, A.FAILED, A.CLOSED}),
    A.PENDING: frozenset({A.SUCCEEDED, A.FAILED, A.CLOSED}),
    A.FAILED: frozenset({A.SUCCEEDED}),
    A.CLOSED: frozenset({A.SUCCEEDED}),
    A.SUCCEEDED: frozenset(),
}


def attempt_allowed(current: AttemptStatus, target: AttemptStatus) -> bool:
    return target in ATTEMPT_TRANSITIONS[current]
