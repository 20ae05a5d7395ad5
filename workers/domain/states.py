"""The payment state machine as one table (DESIGN.md §3). Transitions are applied as guarded updates
(`UPDATE payments … WHERE status = :expected`), so two racing writers cannot both move the same payment."""

from __future__ import annotations

from runtime.errors import IllegalTransition
from workers.domain.types import PaymentStatus

P = PaymentStatus

TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    P.PENDING: frozenset({P.SUCCEEDED, P.FAILED, P.CLOSED}),
    P.SUCCEEDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED}),
    # Another partial refund keeps it partially refunded; the last one completes it.
    P.PARTIALLY_REFUNDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED}),
    P.FAILED: frozenset(),
    P.CLOSED: frozenset(),
    P.REFUNDED: frozenset(),
}

REFUNDABLE = frozenset(status for status, targets in TRANSITIONS.items() if P.REFUNDED in targets)


def allowed(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


def check(current: PaymentStatus, target: PaymentStatus) -> None:
    if not allowed(current, target):
        raise IllegalTransition(f"a {current.name} payment cannot become {target.name}")
