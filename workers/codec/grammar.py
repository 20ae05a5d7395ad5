"""The one input grammar (docs/api.md, "Field grammar"): every field of every request is checked by these rules.

Every pattern is applied with `fullmatch` and compiled with re.ASCII: a pattern anchored only with `$` would
match before a final newline ("learner-1\\n"), and `\\d` or `str.isdigit` would accept non-ASCII digits. Every
message that mentions caller input quotes at most a short, escaped prefix of it (`quote`), so an error can never
grow with the input (gRPC carries the message in a header limited to a few KiB).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from decimal import Decimal

from runtime.errors import FieldViolation, InvalidArgument
from workers.domain.cards import contains_card_number, withhold_card_numbers
from workers.domain.currencies import minor_unit_exponent
from workers.domain.limits import (
    IDENTIFIER_MAX_CHARS,
    MAX_AMOUNT_MINOR,
    RATE_MAX_DECIMALS,
)

IDENTIFIER = re.compile(rf"[A-Za-z0-9_.:-]{{1,{IDENTIFIER_MAX_CHARS}}}", re.ASCII)
IDENTIFIER_RULE = f"must be 1-{IDENTIFIER_MAX_CHARS} characters of A-Z a-z 0-9 _ . : - (ASCII, case-sensitive)"
CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
E164 = re.compile(r"\+[1-9][0-9]{1,14}", re.ASCII)  # a phone number (docs/risk.md)
IP_ADDRESS_MAX_CHARS = 45
# No sign, no exponent, no spaces, no leading zeros, no bare point: "0", "0.15", "1.000000".
RATE = re.compile(rf"(?:0|[1-9][0-9]{{0,5}})(?:\.[0-9]{{1,{RATE_MAX_DECIMALS}}})?", re.ASCII)
RATE_RULE = f"a plain decimal such as 0.15 (digits, at most {RATE_MAX_DECIMALS} decimal places, no sign or exponent)"

# Characters free text may not contain: C0 and C1 controls and DEL (terminals act on them, e.g. the 8-bit CSI
# U+009B), lone surrogates, line/paragraph separators, bidirectional embeddings/overrides/isolates (they make
# text display differently from what it is) and Unicode noncharacters.
_FORBIDDEN_TEXT = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)
QUOTE_MAX_CHARS = 24
_LONGEST_TYPED_CARD = 37  # 19 digits and 18 separators: a card number crossing the cut is still found whole


def quote(value: str) -> str:
    """Caller input for an error message: at most QUOTE_MAX_CHARS characters, escaped to printable ASCII, with any
    card number in it withheld (error messages reach logs and callers' logs; docs/security.md)."""
    shown = withhold_card_numbers(value[: QUOTE_MAX_CHARS + _LONGEST_TYPED_CARD])
    if len(value) <= QUOTE_MAX_CHARS and len(shown) <= QUOTE_MAX_CHARS:
        return ascii(shown)
    return f"{shown[:QUOTE_MAX_CHARS]!a}... ({len(value)} characters)"


def is_identifier(value: str) -> bool:
    return IDENTIFIER.fullmatch(value) is not None


def forbidden_character(value: str) -> str | None:
    """A description of the first character free text may not contain, or None."""
    found = _FORBIDDEN_TEXT.search(value)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start()}"


def parse_ip_address(text: str) -> str | None:
    """An IPv4 or IPv6 address in its compressed form, or None. No port, zone (%eth0), brackets or spaces. An
    IPv4-mapped IPv6 address (::ffff:198.51.100.7, as dual-stack servers report IPv4 peers) is its IPv4 address,
    so an IPv4 blocklist matches it (docs/risk.md)."""
    if len(text) > IP_ADDRESS_MAX_CHARS or not text.isascii() or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped or address)


def parse_rate(text: str) -> Decimal | None:
    """A rate from its decimal string ('' is 0); None unless it is a plain decimal of the grammar."""
    if text == "":
        return Decimal(0)
    if RATE.fullmatch(text) is None:
        return None
    return Decimal(text)


@dataclass
class Violations:
    """Collects every problem of one request, so the caller can fix them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, name: str, description: str) -> None:
        self.items.append(FieldViolation(name, description))

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def identifier(self, name: str, value: str, *, required: bool = True) -> None:
        if not value:
            if required:
                self.add(name, f"is required; it {IDENTIFIER_RULE}")
        elif not is_identifier(value):
            self.add(name, f"{IDENTIFIER_RULE}; got {quote(value)}")

    def amount(self, name: str, value: int) -> None:
        if value <= 0:
            self.add(name, f"must be a positive number of minor units, got {value}")
        elif value > MAX_AMOUNT_MINOR:
            self.add(name, f"must be at most {MAX_AMOUNT_MINOR} minor units (the per-call ceiling), got {value}")

    def currency(self, name: str, value: str) -> None:
        if not value:
            self.add(name, "is required: an ISO-4217 code such as CNY")
        elif CURRENCY.fullmatch(value) is None or minor_unit_exponent(value) is None:
            self.add(
                name, f"must be a supported ISO-4217 code (three upper-case letters, e.g. CNY); got {quote(value)}"
            )

    def text(self, name: str, value: str, max_chars: int) -> None:
        if len(value) > max_chars:
            self.add(name, f"must be at most {max_chars} characters, got {len(value)}")
            return
        bad = forbidden_character(value)
        if bad is not None:
            self.add(
                name,
                "must not contain control characters (C0, DEL, C1), lone surrogates, line separators, "
                f"bidirectional overrides or noncharacters; found {bad}",
            )
        elif contains_card_number(value):
            self.add(name, "must not contain a card number (it would be stored in clear); use TokenizeCard")

    def rate(self, name: str, value: str, *, below_one: bool) -> Decimal | None:
        """A rate in [0, 1) (discounts) or [0, 1] (taxes); None (and a violation) otherwise."""
        rate = parse_rate(value)
        interval = "[0, 1)" if below_one else "[0, 1]"
        if rate is None or rate > 1 or (below_one and rate == 1):
            self.add(name, f"must be {RATE_RULE} in {interval}; empty means 0; got {quote(value)}")
            return None
        return rate

    def enum(self, name: str, value: int, allowed: dict[int, str]) -> bool:
        """A required enum: one of `allowed` (number -> name), never UNSPECIFIED or an unknown number."""
        if value in allowed:
            return True
        choices = ", ".join(allowed.values())
        got = "nothing (UNSPECIFIED)" if value == 0 else f"the unknown value {value}"
        self.add(name, f"must be one of {choices}; got {got}")
        return False
