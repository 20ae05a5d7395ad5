"""The risk engine's arithmetic and rules (docs/risk.md): 1 - prod(1 - p), never a sum."""

from __future__ import annotations

import ipaddress
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from workers.domain.networks import NetworkSet
from workers.domain.risk import (
    ONE,
    ZERO,
    Decision,
    Facts,
    Rule,
    RuleKind,
    RuleSet,
    combine,
    decide,
    evaluate,
    score_text,
)
from workers.domain.types import Method

probabilities = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)
signal_lists = st.lists(probabilities, max_size=12)


def test_two_sixty_percent_signals_are_eighty_four_not_one_hundred_twenty() -> None:
    assert combine([Decimal("0.6"), Decimal("0.6")]) == Decimal("0.84")
    assert score_text(combine([Decimal("0.6"), Decimal("0.6")])) == "0.84"


def test_no_signal_is_no_risk_and_a_certain_one_is_certain() -> None:
    assert combine([]) == ZERO
    assert combine([Decimal("0.3"), ONE]) == ONE
    assert score_text(ONE) == "1" and score_text(ZERO) == "0"


@given(signal_lists)
def test_the_combined_risk_is_a_probability(ps: list[Decimal]) -> None:
    assert ZERO <= combine(ps) <= ONE


@given(signal_lists, probabilities)
def test_another_signal_never_lowers_the_risk(ps: list[Decimal], extra: Decimal) -> None:
    assert combine([*ps, extra]) >= combine(ps)
    assert combine([*ps, extra]) >= extra


@given(signal_lists, st.randoms(use_true_random=False))
def test_the_order_of_signals_does_not_matter(ps: list[Decimal], rng) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(ps)
    rng.shuffle(shuffled)
    assert combine(shuffled) == combine(ps)


@given(st.lists(st.decimals(min_value="0.01", max_value="0.99", places=2), min_size=2, max_size=8))
def test_it_is_never_the_sum(ps: list[Decimal]) -> None:
    # Strictly below the sum whenever two or more uncertain signals fire; the seeds' sum could pass 1.
    assert combine(ps) < sum(ps)
    assert combine(ps) < ONE


@given(probabilities, probabilities, probabilities)
def test_thresholds_map_monotonically(score: Decimal, a: Decimal, b: Decimal) -> None:
    review_at, deny_at = sorted((max(a, Decimal("0.0001")), max(b, Decimal("0.0001"))))
    decision = decide(score, review_at, deny_at)
    assert (decision is Decision.DENY) == (score >= deny_at)
    assert (decision is Decision.ALLOW) == (score < review_at)


def _facts(**changes: object) -> Facts:
    base: dict[str, object] = {
        "operation": "CreatePayment",
        "user_id": "u1",
        "amount_minor": 1000,
        "currency": "CNY",
        "method": Method.CARD,
    }
    base.update(changes)
    return Facts(**base)  # type: ignore[arg-type]


def _rules(*rules: Rule) -> RuleSet:
    return RuleSet(review_at=Decimal("0.5"), deny_at=Decimal("0.9"), rules=rules)


def test_two_signals_of_sixty_percent_review_with_thresholds_half_and_nine_tenths() -> None:
    big = Rule("big", RuleKind.AMOUNT_LIMIT, Decimal("0.6"), currency="CNY", max_amount_minor=500)
    region = Rule("region", RuleKind.REGION_MISMATCH, Decimal("0.6"), region_currencies={"US": frozenset({"USD"})})
    outcome = evaluate(_rules(big, region), _facts(region="US"))
    assert (outcome.decision, outcome.score_text, outcome.reasons) == (Decision.REVIEW, "0.84", ("big", "region"))
    assert evaluate(_rules(big), _facts()).decision is Decision.REVIEW
    assert evaluate(_rules(big, region), _facts(amount_minor=100)).decision is Decision.ALLOW


def test_each_kind_fires_only_on_its_own_facts() -> None:
    p = Decimal("0.5")
    count = Rule("count", RuleKind.VELOCITY_COUNT, p, window_s=60, max_count=2)
    amount = Rule("amount", RuleKind.VELOCITY_AMOUNT, p, window_s=60, currency="CNY", max_amount_minor=5000)
    young = Rule("young", RuleKind.NEW_ACCOUNT, p, currency="CNY", max_age_s=3600, max_amount_minor=500)
    listed = Rule(
        "listed",
        RuleKind.BLOCKLIST,
        p,
        users=frozenset({"bad"}),
        device_ids=frozenset({"dev-1"}),
        networks=NetworkSet.of([ipaddress.ip_network("10.0.0.0/8")]),
        phone_fingerprints=frozenset({"f" * 64}),
    )
    card_only = Rule("card", RuleKind.AMOUNT_LIMIT, p, methods=frozenset({Method.CARD}), currency="CNY")
    assert evaluate(_rules(count), _facts(velocity={(60, ""): (3, 0)})).reasons == ("count",)
    assert evaluate(_rules(count), _facts(velocity={(60, ""): (2, 0)})).reasons == ()
    assert evaluate(_rules(amount), _facts(velocity={(60, "CNY"): (1, 5001)})).reasons == ("amount",)
    assert evaluate(_rules(young), _facts(account_age_s=None)).reasons == ("young",)
    assert evaluate(_rules(young), _facts(account_age_s=7200.0)).reasons == ()
    assert evaluate(_rules(young), _facts(account_age_s=10.0, amount_minor=500)).reasons == ()
    for hit in (
        {"user_id": "bad"},
        {"device_id": "dev-1"},
        {"ip_address": "10.1.2.3"},
        {"phone_fingerprint": "f" * 64},
    ):
        assert evaluate(_rules(listed), _facts(**hit)).reasons == ("listed",)
    assert evaluate(_rules(listed), _facts(ip_address="11.0.0.1", device_id="dev-2")).reasons == ()
    assert evaluate(_rules(card_only), _facts(method=Method.WALLET)).reasons == ()
    assert evaluate(_rules(card_only), _facts(currency="USD")).reasons == ()  # other currencies: not this rule's


def test_a_certain_rule_denies_alone_and_a_zero_rule_only_counts() -> None:
    certain = Rule("certain", RuleKind.BLOCKLIST, ONE, users=frozenset({"u1"}))
    watch = Rule("watch", RuleKind.BLOCKLIST, ZERO, users=frozenset({"u1"}))
    assert evaluate(_rules(certain), _facts()).decision is Decision.DENY
    watched = evaluate(_rules(watch), _facts())
    assert (watched.decision, watched.reasons, watched.score) == (Decision.ALLOW, ("watch",), ZERO)
