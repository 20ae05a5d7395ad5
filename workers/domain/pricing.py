"""Invoice arithmetic (docs/ledger.md, "Prices, splits, refunds, transfers, expiry"): Decimal only where rates
apply, integer minor units everywhere else.

    discount_minor = round_half_up(list_price_minor * discount_rate)
    net_minor      = list_price_minor - discount_minor
    tax_minor      = round_half_up(net_minor * tax_rate)
    amount_minor   = net_minor + tax_minor

Each component is rounded once, half-up, to the currency's minor unit (amounts are already in minor units, so
that is a whole number), and the parts add up to the total by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True)
class Quote:
    list_price_minor: int
    discount_minor: int
    tax_minor: int
    amount_minor: int


def round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def quote(list_price_minor: int, discount_rate: Decimal, tax_rate: Decimal) -> Quote:
    discount_minor = round_half_up(list_price_minor * discount_rate)
    net_minor = list_price_minor - discount_minor
    tax_minor = round_half_up(net_minor * tax_rate)
    return Quote(list_price_minor, discount_minor, tax_minor, net_minor + tax_minor)


def split_fee(amount_minor: int, platform_fee_bps: int) -> tuple[int, int]:
    """(creator, platform) parts of a purchase. The platform's fee is rounded down to a whole minor unit; the
    indivisible remainder goes to the creator, so the two parts always sum to the amount."""
    platform = amount_minor * platform_fee_bps // 10_000
    return amount_minor - platform, platform


def allocate_refund(
    payment_amount_minor: int, creator_amount_minor: int, refunded_before_minor: int, refund_minor: int
) -> tuple[int, int]:
    """(creator, platform) parts of one refund, proportional to the payment's split, exact over any sequence.

    The creator's cumulative share after the refund is floor(refunded_after * creator / amount); this refund's
    creator part is the difference from before. Every refund sequence that returns the whole payment therefore
    takes back exactly the creator's and the platform's original parts, and no fen is lost to rounding.
    """
    refunded_after = refunded_before_minor + refund_minor
    creator_before = refunded_before_minor * creator_amount_minor // payment_amount_minor
    creator_after = refunded_after * creator_amount_minor // payment_amount_minor
    creator_part = creator_after - creator_before
    return creator_part, refund_minor - creator_part
