"""Card numbers as data (docs/security.md, "Card and personal data"): the shape of a PAN, its brand, its mask,
and how to spot one inside other text so that it is never stored, echoed or logged by accident.

Plain Python: the grammar (workers/codec/grammar.py) and the vault (workers/vault/) both use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

PAN_MIN_DIGITS = 12
PAN_MAX_DIGITS = 19
# Digits, optionally grouped by single spaces or dashes ("4242 4242 4242 4242", "4242-4242-..."), as people type.
_GROUPED = re.compile(r"[0-9](?:[ -]?[0-9]){11,18}", re.ASCII)
# Any run of digits with single separators: the candidates in free text (a run longer than 19 digits is checked by
# its windows, so a card number glued to other digits is still found).
_RUN = re.compile(r"[0-9](?:[ -]?[0-9])*", re.ASCII)
WITHHELD = "[card number withheld]"
# A card token of the vault (workers/vault/cards.py): the prefix and 128 random bits in hex. Its shape is ours, so
# a digit run inside one is never a card number typed by someone (decode does not search it).
VAULT_TOKEN_PREFIX = "pgcard_"  # noqa: S105 - a prefix, not a secret
VAULT_TOKEN = re.compile(r"pgcard_[0-9a-f]{32}", re.ASCII)
BRANDS = ("visa", "mastercard", "amex", "unionpay", "jcb", "discover", "unknown")


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit of a string of ASCII digits."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def normalize_pan(text: str) -> str | None:
    """The digits of a card number typed as people do (spaces or dashes between digits), or None when `text` is
    not 12-19 digits passing the Luhn check."""
    if _GROUPED.fullmatch(text) is None:
        return None
    digits = text.replace(" ", "").replace("-", "")
    return digits if luhn_ok(digits) else None


def brand(pan: str) -> str:
    """The card scheme by its issuer prefix (enough to show; the processor decides what it accepts)."""
    two, four = int(pan[:2]), int(pan[:4])
    if pan.startswith("4"):
        return "visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if two == 62:
        return "unionpay"
    if 3528 <= four <= 3589:
        return "jcb"
    if pan.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def masked(last4: str) -> str:
    return f"**** {last4}"


def expired(month: int, year: int, today: date) -> bool:
    return (year, month) < (today.year, today.month)


def contains_card_number(text: str) -> bool:
    """Whether `text` holds 12-19 digits (single spaces or dashes between them allowed) that pass the Luhn check.

    The search costs up to a few hundred Luhn checks per run of digits, so callers bound `text`: free text is
    checked only within its 256-character limit, quotes are cut first, a card_token only up to 64 characters."""
    return any(_card_span(run.group()) is not None for run in _RUN.finditer(text))


def withhold_card_numbers(text: str) -> str:
    """`text` with every card number in it replaced by WITHHELD (for error messages that quote caller input)."""
    return _RUN.sub(lambda run: WITHHELD if _card_span(run.group()) is not None else run.group(), text)


def _card_span(run: str) -> tuple[int, int] | None:
    """The first window of 12-19 digits of a digit run that passes Luhn (as digit positions), or None."""
    digits = run.replace(" ", "").replace("-", "")
    if len(digits) < PAN_MIN_DIGITS or len(digits) > 64:  # a longer run is not a card a person typed
        return None if len(digits) < PAN_MIN_DIGITS else (0, len(digits))
    for size in range(PAN_MIN_DIGITS, min(PAN_MAX_DIGITS, len(digits)) + 1):
        for start in range(len(digits) - size + 1):
            if luhn_ok(digits[start : start + size]):
                return start, start + size
    return None


def new_vault_token(random_hex: Callable[[], str]) -> str:
    """A vault card token from `random_hex` (32 hex digits): drawn again while it holds 12 or more digits in a row
    that pass the Luhn check, so that no token ever looks like a card number to a scanner of logs (about one draw
    in 100 does; 8 draws all doing so, about 1e-16)."""
    for _ in range(8):
        token = VAULT_TOKEN_PREFIX + random_hex()
        if not contains_card_number(token):
            return token
    raise RuntimeError("no random token without a card-number-like run in 8 draws: is the random source broken?")
