"""The risk engine's rules and arithmetic (docs/risk.md): plain Python, no I/O.

A rule that fires is a signal that the payment is fraud with the rule's probability p. Signals are taken as
independent, so the combined risk is 1 - prod(1 - p) over the rules that fired: two 60 % signals make 84 %, never
120 %. Thresholds map the combined risk to ALLOW, REVIEW or DENY; a rule with p = 1 denies on its own.
Probabilities and scores are Decimals, so the same file gives the same decision on every machine and two 0.6
signals are exactly 0.84.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, localcontext

from workers.domain.networks import NetworkSet
from workers.domain.types import Method

ZERO = Decimal(0)
ONE = Decimal(1)
PROBABILITY_PLACES = 6  # a rule's probability has at most six decimal places
SCORE_PLACES = Decimal("0.000001")  # a score is shown with at most six decimal places, rounded down


class Decision(enum.StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    DENY = "deny"


class RuleKind(enum.StrEnum):
    VELOCITY_COUNT = "velocity_count"  # more than max_count payments of the user within window_s
    VELOCITY_AMOUNT = "velocity_amount"  # more than max_amount_minor (in currency) within window_s
    AMOUNT_LIMIT = "amount_limit"  # one payment above max_amount_minor (in currency), per method
    NEW_ACCOUNT = "new_account"  # a user whose first wallet is younger than max_age_s, paying above max_amount_minor
    BLOCKLIST = "blocklist"  # a listed user, device id, IP address or network, or phone fingerprint
    REGION_MISMATCH = "region_mismatch"  # a payer's region whose expected currencies do not include the payment's

    @property
    def needs_redis(self) -> bool:
        return self in (RuleKind.VELOCITY_COUNT, RuleKind.VELOCITY_AMOUNT)


OPERATIONS = ("CreatePayment", "TopUp")


@dataclass(frozen=True)
class Rule:
    """One rule of the rules file. Which fields matter depends on `kind` (the file's loader checks that)."""

    name: str
    kind: RuleKind
    probability: Decimal
    operations: frozenset[str] = frozenset(OPERATIONS)
    methods: frozenset[Method] = frozenset()  # empty: every method
    currency: str = ""  # amount rules: the currency their amounts are in (the rule applies to it only)
    max_amount_minor: int = 0
    max_count: int = 0
    window_s: int = 0
    max_age_s: int = 0
    users: frozenset[str] = frozenset()
    device_ids: frozenset[str] = frozenset()
    networks: NetworkSet = field(default_factory=NetworkSet)
    phone_fingerprints: frozenset[str] = frozenset()
    region_currencies: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def applies_to(self, operation: str, method: Method, currency: str) -> bool:
        if operation not in self.operations or (self.methods and method not in self.methods):
            return False
        return not self.currency or self.currency == currency


@dataclass(frozen=True)
class RuleSet:
    review_at: Decimal
    deny_at: Decimal
    rules: tuple[Rule, ...]

    @property
    def needs_redis(self) -> bool:
        return any(rule.kind.needs_redis for rule in self.rules)

    @property
    def needs_account_age(self) -> bool:
        return any(rule.kind is RuleKind.NEW_ACCOUNT for rule in self.rules)

    def windows(self) -> list[tuple[int, str]]:
        """The (window_s, currency) pairs the velocity rules ask Redis about, each once, in a stable order."""
        pairs = {(rule.window_s, rule.currency) for rule in self.rules if rule.kind.needs_redis}
        return sorted(pairs)


NO_RULES = RuleSet(review_at=ONE, deny_at=ONE, rules=())


@dataclass(frozen=True)
class Facts:
    """What the rules are evaluated against: the payment, the payer, and what Redis and the ledger said."""

    operation: str
    user_id: str
    amount_minor: int
    currency: str
    method: Method
    device_id: str = ""
    ip_address: str = ""
    phone_fingerprint: str = ""
    region: str = ""
    # (window_s, currency) → (payments, amount in that currency) within the window, this one included.
    velocity: Mapping[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    account_age_s: float | None = None  # None: the user has no wallet yet


@dataclass(frozen=True)
class Assessment:
    decision: Decision
    score: Decimal
    reasons: tuple[str, ...]  # the names of the rules that fired, in the file's order

    @property
    def score_text(self) -> str:
        return score_text(self.score)


ALLOWED = Assessment(Decision.ALLOW, ZERO, ())


def combine(probabilities: Iterable[Decimal]) -> Decimal:
    """1 - prod(1 - p): the probability that at least one of independent signals is right. Never a sum.

    Exact: each probability has at most PROBABILITY_PLACES decimal places (the rules file's limit), so the product
    of n of them has at most n times as many, and the context is given that many digits — no rounding, so the
    result does not depend on the order of the rules."""
    factors = [ONE - probability for probability in probabilities]
    with localcontext() as exact:
        exact.prec = PROBABILITY_PLACES * len(factors) + 2
        remaining = ONE
        for factor in factors:
            remaining *= factor
        return ONE - remaining


def decide(score: Decimal, review_at: Decimal, deny_at: Decimal) -> Decision:
    if score >= deny_at:
        return Decision.DENY
    if score >= review_at:
        return Decision.REVIEW
    return Decision.ALLOW


def score_text(score: Decimal) -> str:
    """A score as the API shows it: a plain decimal in [0, 1] with at most six places ("0.84", "1", "0")."""
    shown = score.quantize(SCORE_PLACES, rounding=ROUND_DOWN).normalize()
    return format(shown, "f")


def fired(rule: Rule, facts: Facts) -> bool:
    """Whether one rule signals fraud for these facts (a rule that does not apply never fires)."""
    if not rule.applies_to(facts.operation, facts.method, facts.currency):
        return False
    kind = rule.kind
    if kind is RuleKind.VELOCITY_COUNT:
        return facts.velocity.get((rule.window_s, rule.currency), (0, 0))[0] > rule.max_count
    if kind is RuleKind.VELOCITY_AMOUNT:
        return facts.velocity.get((rule.window_s, rule.currency), (0, 0))[1] > rule.max_amount_minor
    if kind is RuleKind.AMOUNT_LIMIT:
        return facts.amount_minor > rule.max_amount_minor
    if kind is RuleKind.NEW_ACCOUNT:
        young = facts.account_age_s is None or facts.account_age_s < rule.max_age_s
        return young and facts.amount_minor > rule.max_amount_minor
    if kind is RuleKind.BLOCKLIST:
        return _listed(rule, facts)
    expected = rule.region_currencies.get(facts.region)
    return expected is not None and facts.currency not in expected


def _listed(rule: Rule, facts: Facts) -> bool:
    if facts.user_id in rule.users or (facts.device_id and facts.device_id in rule.device_ids):
        return True
    if facts.phone_fingerprint and facts.phone_fingerprint in rule.phone_fingerprints:
        return True
    if facts.ip_address and rule.networks:
        return ipaddress.ip_address(facts.ip_address) in rule.networks
    return False


def evaluate(rules: RuleSet, facts: Facts) -> Assessment:
    hits = [rule for rule in rules.rules if fired(rule, facts)]
    if not hits:
        return ALLOWED
    score = combine(rule.probability for rule in hits)
    return Assessment(decide(score, rules.review_at, rules.deny_at), score, tuple(rule.name for rule in hits))
