"""The one input grammar (docs/api.md): identifiers, rates, currencies, free text and how input is quoted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.errors import InvalidArgument
from workers.codec import decode as validation
from workers.codec import grammar
from workers.domain.limits import MAX_AMOUNT_MINOR


@pytest.mark.parametrize(
    "value",
    ["learner-1", "a", "A.b:c_d-e", "x" * 64, "0", "pay_01hzzzzzzzzzzzzzzzzzzzzzzz"],
)
def test_identifiers_of_the_grammar(value: str) -> None:
    assert grammar.is_identifier(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "learner-1\n",  # the classic: `$` matches before a final newline
        "learner-1\r\n",
        "\nlearner-1",
        "learner 1",
        "x" * 65,
        "learner\x00",
        "l\u0435arner",  # Cyrillic ie: identifiers are ASCII only
        "\uff11\uff12\uff13",  # fullwidth digits
        "\u0663",  # Arabic-Indic digit
        "learner/1",
    ],
)
def test_everything_else_is_not_an_identifier(value: str) -> None:
    assert not grammar.is_identifier(value)


@pytest.mark.parametrize(("text", "expected"), [("", "0"), ("0", "0"), ("0.15", "0.15"), ("1", "1"), ("1.000000", "1")])
def test_plain_decimal_rates(text: str, expected: str) -> None:
    rate = grammar.parse_rate(text)
    assert rate is not None and str(rate.normalize()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0.1\n",
        " 0.1",
        "0.1 ",
        "+0.1",
        "-0",
        "1e-1",
        "0.1234567",
        "00.1",
        ".5",
        "5.",
        "0,5",
        "NaN",
        "0.\u00b9",
        "\u0660.\u0665",
    ],
)
def test_rates_outside_the_grammar(text: str) -> None:
    assert grammar.parse_rate(text) is None


@pytest.mark.parametrize(
    "character", ["\x00", "\n", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u202e", "\u2066", "\ufffe"]
)
def test_free_text_refuses_control_and_formatting_characters(character: str) -> None:
    found = grammar.forbidden_character(f"course{character}")
    assert found == f"U+{ord(character):04X} at position 6"


@pytest.mark.parametrize("text", ["Course: 数据结构", "emoji 👩‍💻 ok", "Ünïcödé", "tab-free", ""])
def test_ordinary_text_is_accepted(text: str) -> None:
    assert grammar.forbidden_character(text) is None


@given(st.text(max_size=100_000))
def test_a_quote_of_input_is_short_printable_ascii(value: str) -> None:
    quoted = grammar.quote(value)
    assert len(quoted) <= 24 * 10 + 40
    assert quoted.isascii() and quoted.isprintable()


def test_every_message_stays_short_whatever_the_input() -> None:
    huge = "Z" * 100_000
    request = pb.CreatePaymentRequest(
        order_id=huge, user_id=huge, currency=huge, method=pb.PAYMENT_METHOD_WALLET, payee_id=huge,
        description=huge, price=pb.PriceInputs(list_price_minor=1, discount_rate=huge, tax_rate=huge),
    )  # fmt: skip
    with pytest.raises(InvalidArgument) as error:
        validation.create_payment(request)
    assert len(error.value.message) < 2_000
    assert {v.field for v in error.value.violations} >= {"order_id", "currency", "price.discount_rate"}


def test_a_priced_amount_obeys_the_per_call_ceiling() -> None:
    """A list price at the ceiling with a 100 % tax would be twice the ceiling: refused, naming a price field."""
    at_ceiling = pb.PriceInputs(list_price_minor=MAX_AMOUNT_MINOR, tax_rate="1")
    request = pb.CreatePaymentRequest(
        order_id="o", user_id="u", currency="CNY", method=pb.PAYMENT_METHOD_WALLET, price=at_ceiling
    )
    with pytest.raises(InvalidArgument) as error:
        validation.create_payment(request)
    assert [v.field for v in error.value.violations] == ["price.tax_rate"]
    assert str(MAX_AMOUNT_MINOR) in error.value.violations[0].description
    with pytest.raises(InvalidArgument):
        validation.quote_price(pb.QuotePriceRequest(list_price_minor=MAX_AMOUNT_MINOR, tax_rate="0.5", currency="CNY"))
    halved = pb.PriceInputs(list_price_minor=MAX_AMOUNT_MINOR, discount_rate="0.5", tax_rate="1")
    request.price.CopyFrom(halved)
    assert validation.create_payment(request).amount_minor == MAX_AMOUNT_MINOR


@pytest.mark.parametrize("value", [99, -1, 2**31 - 1])
def test_unknown_enum_values_are_named(value: int) -> None:
    request = pb.TopUpRequest(order_id="o", user_id="u", amount_minor=1, currency="CNY", method=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as error:
        validation.top_up(request)
    assert f"unknown value {value}" in error.value.violations[0].description


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("::ffff:198.51.100.7", "198.51.100.7"), ("198.51.100.7", "198.51.100.7"), ("2001:DB8::1", "2001:db8::1")],
)
def test_an_ipv4_mapped_address_is_its_ipv4_address(text: str, parsed: str) -> None:
    """Dual-stack servers report IPv4 peers as ::ffff:a.b.c.d; an IPv4 blocklist must still match them."""
    assert grammar.parse_ip_address(text) == parsed
