"""Page tokens: round trip, and every kind of tampering or misuse is refused (never an exception)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.codec.page_tokens import MAX_CURSOR, PageTokens, well_formed

TOKENS = PageTokens(b"k" * 32)


def test_a_token_reads_back_for_its_owner_and_user() -> None:
    token = TOKENS.issue("orders", "learner-1", 12345)
    assert well_formed(token)
    assert TOKENS.read("orders", "learner-1", token) == 12345


def test_a_token_is_bound_to_owner_user_and_key() -> None:
    token = TOKENS.issue("orders", "learner-1", 7)
    assert TOKENS.read("payouts", "learner-1", token) is None
    assert TOKENS.read("orders", "learner-2", token) is None
    assert TOKENS.read("orders", "learner-", token) is None
    assert PageTokens(b"o" * 32).read("orders", "learner-1", token) is None


def test_owner_and_user_cannot_trade_characters() -> None:
    assert TOKENS.read("ab", "c", TOKENS.issue("a", "bc", 5)) is None


def test_a_changed_cursor_fails_the_mac() -> None:
    raw = bytearray(base64.urlsafe_b64decode(TOKENS.issue("o", "u", 1000)))
    raw[7] ^= 1
    assert TOKENS.read("o", "u", base64.urlsafe_b64encode(bytes(raw)).decode()) is None


@pytest.mark.parametrize(
    "token", ["", "djE6MTA", "①" * 32, "A" * 31, "A" * 33, "A" * 31 + "\n", "A" * 31 + "=", "²" + "A" * 31]
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert TOKENS.read("o", "u", token) is None


@given(st.text(max_size=80))
def test_any_text_is_either_refused_or_a_cursor(token: str) -> None:
    cursor = TOKENS.read("o", "u", token)
    assert cursor is None or 0 < cursor <= MAX_CURSOR


@pytest.mark.parametrize("cursor", [0, -1, MAX_CURSOR + 1])
def test_cursors_out_of_range_are_never_issued(cursor: int) -> None:
    with pytest.raises(ValueError):
        TOKENS.issue("o", "u", cursor)
