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
    # Held for risk review (docs/risk.md): released (a wallet purchase is paid, a channel payment awaits its payer)
    # or refused. Nothing leads into IN_REVIEW: a payment is created in it or never is.
    (P.IN_REVIEW, P.SUCCEEDED),
    (P.IN_REVIEW, P.PENDING),
    (P.IN_REVIEW, P.FAILED),
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


# The attempt machine (docs/channels.md): what a provider's answer may do to one attempt at a channel. A settled
# attempt moves again only to SUCCEEDED: the provider reports money we did not expect, recorded and refunded.
A = states.AttemptStatus
ATTEMPT_ALLOWED = {
    (A.CREATED, A.PENDING),
    (A.CREATED, A.UNKNOWN),
    (A.CREATED, A.SUCCEEDED),
    (A.CREATED, A.FAILED),
    (A.CREATED, A.CLOSED),
    (A.UNKNOWN, A.PENDING),
    (A.UNKNOWN, A.SUCCEEDED),
    (A.UNKNOWN, A.FAILED),
    (A.UNKNOWN, A.CLOSED),
    (A.PENDING, A.SUCCEEDED),
    (A.PENDING, A.FAILED),
    (A.PENDING, A.CLOSED),
    (A.FAILED, A.SUCCEEDED),
    (A.CLOSED, A.SUCCEEDED),
}


@pytest.mark.parametrize(("current", "target"), sorted(itertools.product(A, A)))
def test_every_attempt_transition(current: states.AttemptStatus, target: states.AttemptStatus) -> None:
    assert states.attempt_allowed(current, target) == ((current, target) in ATTEMPT_ALLOWED)


def test_settled_attempts_are_the_ones_a_provider_can_no_longer_change_by_itself() -> None:
    assert {s for s in A if s.settled} == {A.SUCCEEDED, A.FAILED, A.CLOSED}
    assert not states.ATTEMPT_TRANSITIONS[A.SUCCEEDED]
