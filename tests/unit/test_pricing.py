from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.codec.grammar import parse_rate
from workers.domain.pricing import allocate_refund, quote, split_fee


def test_the_issue_example() -> None:
    # 100.00 CNY, discount 0.10, tax 0.05 → 94.50
    result = quote(10_000, Decimal("0.10"), Decimal("0.05"))
    assert (result.discount_minor, result.tax_minor, result.amount_minor) == (1_000, 450, 9_450)


@pytest.mark.parametrize(
    ("price", "discount", "tax", "expected"),
    [
        (1, "0.5", "0", (1, 0, 0)),  # 0.5 rounds half-up to 1: the whole price is discounted
        (3, "0.5", "0", (2, 0, 1)),  # 1.5 → 2
        (10, "0.25", "0.5", (3, 4, 11)),  # discount 2.5 → 3, net 7, tax 3.5 → 4
        (999, "0", "1", (0, 999, 1998)),  # a tax of 100 % doubles the price
        (7, "0.333333", "0.333333", (2, 2, 7)),
    ],
)
def test_half_up_once_per_component(price: int, discount: str, tax: str, expected: tuple[int, int, int]) -> None:
    result = quote(price, Decimal(discount), Decimal(tax))
    assert (result.discount_minor, result.tax_minor, result.amount_minor) == expected


@given(
    price=st.integers(min_value=1, max_value=10**15),
    discount=st.decimals(min_value=0, max_value=Decimal("0.999999"), places=6),
    tax=st.decimals(min_value=0, max_value=1, places=6),
)
def test_the_parts_always_add_up(price: int, discount: Decimal, tax: Decimal) -> None:
    result = quote(price, discount, tax)
    assert result.amount_minor == price - result.discount_minor + result.tax_minor
    assert 0 <= result.discount_minor <= price
    assert 0 <= result.tax_minor <= price


@pytest.mark.parametrize(
    "text",
    [
        "1e-3",
        "-0.1",
        "0.1234567",
        ".5",
        "1.",
        "abc",
        " 0.1",
        "0,1",
        "NaN",
        "0.1\n",
        "00.1",
        "+0.1",
        "\u0660.1",
        "0.\u00b9",
        "Infinity",
    ],
)
def test_rates_that_are_not_plain_decimals_are_refused(text: str) -> None:
    assert parse_rate(text) is None


def test_rates() -> None:
    assert parse_rate("") == 0
    assert parse_rate("0.123456") == Decimal("0.123456")
    assert parse_rate("1") == 1


@given(amount=st.integers(min_value=1, max_value=10**15), bps=st.integers(min_value=0, max_value=10_000))
def test_split_loses_nothing(amount: int, bps: int) -> None:
    creator, platform = split_fee(amount, bps)
    assert creator + platform == amount
    assert platform == amount * bps // 10_000


@given(
    amount=st.integers(min_value=1, max_value=10**9),
    bps=st.integers(min_value=0, max_value=10_000),
    cuts=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=12),
)
def test_refund_allocation_is_exact_over_any_sequence(amount: int, bps: int, cuts: list[int]) -> None:
    creator_share, platform_share = split_fee(amount, bps)
    refunded = creator_back = platform_back = 0
    for cut in cuts:
        part = min(cut, amount - refunded)
        if part == 0:
            break
        creator_part, platform_part = allocate_refund(amount, creator_share, refunded, part)
        assert creator_part >= 0 and platform_part >= 0 and creator_part + platform_part == part
        refunded += part
        creator_back += creator_part
        platform_back += platform_part
    assert creator_back <= creator_share and platform_back <= platform_share
    if refunded == amount:
        assert (creator_back, platform_back) == (creator_share, platform_share)
