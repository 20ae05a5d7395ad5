"""Card numbers as data: shape, brand, and never echoed (workers/domain/cards.py, the grammar, TokenizeCard)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.errors import InvalidArgument
from workers.codec import decode, grammar
from workers.domain.cards import (
    VAULT_TOKEN,
    WITHHELD,
    brand,
    contains_card_number,
    luhn_ok,
    new_vault_token,
    normalize_pan,
    withhold_card_numbers,
)

VISA = "4242424242424242"


@pytest.mark.parametrize(
    ("typed", "digits"),
    [(VISA, VISA), ("4242 4242 4242 4242", VISA), ("4242-4242-4242-4242", VISA), ("378282246310005", None)],
)
def test_numbers_are_normalized_from_how_people_type_them(typed: str, digits: str | None) -> None:
    assert normalize_pan(typed) == (digits or typed)


@pytest.mark.parametrize(
    "typed", ["4242424242424241", "4242  4242 4242 4242", " 4242424242424242", "42424242424", "4" * 20, "٤٢٤٢"]
)
def test_anything_else_is_not_a_card_number(typed: str) -> None:
    assert normalize_pan(typed) is None


def test_brands() -> None:
    cards = ["4242424242424242", "5555555555554444", "2223003122003222", "378282246310005", "6200000000000005"]
    assert [brand(c) for c in cards] == ["visa", "mastercard", "mastercard", "amex", "unionpay"]
    assert brand("3530111333300000") == "jcb" and brand("6011111111111117") == "discover"
    assert luhn_ok("0") and not luhn_ok("1") and not luhn_ok("")


def test_card_numbers_inside_text_are_found_and_withheld() -> None:
    text = f"pay with 4242 4242 4242 4242 or x{VISA}y, order 12345"
    assert contains_card_number(text)
    assert withhold_card_numbers(text) == f"pay with {WITHHELD} or x{WITHHELD}y, order 12345"
    assert not contains_card_number("order 2026-11-28 amount 12345")


@given(st.sampled_from(["", "a", "order ", "x" * 30]), st.sampled_from([VISA, "4242 4242 4242 4242"]))
def test_a_quote_never_shows_a_card_number_wherever_it_sits(before: str, number: str) -> None:
    quoted = grammar.quote(before + number + " tail")
    assert "4242424242" not in quoted.replace(" ", "").replace("-", "")


def test_tokenize_card_refusals_never_echo_the_number() -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode.tokenize_card(pb.TokenizeCardRequest(card_number="4242424242424241", exp_month=13, exp_year=1999))
    fields = {v.field: v.description for v in refused.value.violations}
    assert set(fields) == {"card_number", "exp_month", "exp_year"}
    assert "Luhn" in fields["card_number"] and "424242" not in str(fields)
    card = decode.tokenize_card(pb.TokenizeCardRequest(card_number="4242 4242 4242 4242", exp_month=1, exp_year=2030))
    assert card.number.reveal() == VISA and VISA not in repr(card)


@pytest.mark.parametrize("token", [VISA, "4242-4242-4242-4242"])
def test_a_card_number_in_card_token_or_free_text_is_refused_unquoted(token: str) -> None:
    request = pb.CreatePaymentRequest(
        order_id="o-1", user_id="u-1", amount_minor=100, currency="CNY", method=pb.PAYMENT_METHOD_CARD,
        card_token=token, description=f"course {token}",
    )  # fmt: skip
    with pytest.raises(InvalidArgument) as refused:
        decode.create_payment(request)
    fields = {v.field: v.description for v in refused.value.violations}
    assert set(fields) == {"card_token", "description"}
    assert "4242" not in str(fields)


def _card_payment(card_token: str) -> pb.CreatePaymentRequest:
    return pb.CreatePaymentRequest(
        order_id="o-1", user_id="u-1", amount_minor=100, currency="CNY", method=pb.PAYMENT_METHOD_CARD,
        card_token=card_token,
    )  # fmt: skip


@given(st.binary(min_size=16, max_size=16))
def test_every_vault_token_shape_is_accepted_as_a_card_token(random: bytes) -> None:
    """About one random hex token in 100 holds a Luhn-valid run of 12+ digits: it is still ours, not a card."""
    token = "pgcard_" + random.hex()
    assert VAULT_TOKEN.fullmatch(token)
    decode.create_payment(_card_payment(token))  # raises InvalidArgument on any refusal


def test_a_vault_token_with_a_card_like_run_is_accepted_but_never_issued() -> None:
    card_like = "4242424242424242" + "abcdefabcdefabcd"
    assert contains_card_number("pgcard_" + card_like)
    decode.create_payment(_card_payment("pgcard_" + card_like))
    draws = iter([card_like, "0123abcd" * 4])
    assert new_vault_token(lambda: next(draws)) == "pgcard_" + "0123abcd" * 4  # the card-like draw is dropped
    with pytest.raises(RuntimeError, match="random source"):
        new_vault_token(lambda: card_like)


def test_a_card_number_dressed_as_another_token_is_still_refused() -> None:
    for token in ("tok_4242424242424242", "pgcard_4242424242424242", "pgcard_" + "4242424242424242" * 2 + "0"):
        with pytest.raises(InvalidArgument) as refused:
            decode.create_payment(_card_payment(token))
        assert "card_token" in str(refused.value) and "4242" not in str(refused.value)
