"""Every allowed and every forbidden transition of the payment state machine."""

from __future__ import annotations

import itertools

import pytest

from runtime.errors import IllegalTransition
from workers.domain import states
from workers.domain.types import PaymentStatus as P

ALLOWED = {
    (P.PENDING, P.SUCCEEDED),
    (P.PENDING, P.FAILED),
    (P.PENDING, P.CLOSED),
    (P.SUCCEEDED, P.PARTIALLY_REFUNDED),
    (P.SUCCEEDED, P.REFUNDED),
    (P.PARTIALLY_REFUNDED, P.PARTIALLY_REFUNDED),
    (P.PARTIALLY_REFUNDED, P.REFUNDED),
}
ALL_PAIRS = list(itertools.product(P, P))


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed(current: P, target: P) -> None:
    assert states.allowed(current, target)
    states.check(current, target)


@pytest.mark.parametrize(("current", "target"), sorted(set(ALL_PAIRS) - ALLOWED))
def test_forbidden(current: P, target: P) -> None:
    assert not states.allowed(current, target)
    with pytest.raises(IllegalTransition, match=f"{current.name} payment cannot become {target.name}"):
        states.check(current, target)


def test_terminal_states_and_refundable_states() -> None:
    assert {s for s in P if not states.TRANSITIONS[s]} == {P.FAILED, P.CLOSED, P.REFUNDED}
    assert {P.SUCCEEDED, P.PARTIALLY_REFUNDED} == states.REFUNDABLE
