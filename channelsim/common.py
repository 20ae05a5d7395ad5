"""Small helpers shared by every provider: clocks, ids, money formatting."""

from __future__ import annotations

import re
import secrets
import string
import time
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
_YUAN = re.compile(r"^(0|[1-9]\d{0,9})(\.\d{1,2})?$")
_ALNUM = string.ascii_letters + string.digits


def now() -> float:
    return time.time()


def digits(count: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(count))


def token(count: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(count))


def yuan(fen: int) -> str:
    """12345 -> '123.45' (negative amounts keep their sign)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def parse_yuan(text: object) -> int | None:
    """'12.3' -> 1230; None for anything that is not a non-negative amount with at most 2 decimals."""
    if not isinstance(text, str) or not _YUAN.match(text):
        return None
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def local(ts: float, tz: tzinfo = SHANGHAI) -> datetime:
    return datetime.fromtimestamp(ts, tz)


def fmt(ts: float | None, pattern: str, tz: tzinfo = SHANGHAI) -> str:
    return "" if ts is None else local(ts, tz).strftime(pattern)


def rfc3339(ts: float | None, tz: tzinfo = SHANGHAI) -> str:
    return "" if ts is None else local(ts, tz).isoformat(timespec="seconds")


def parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text or "") else None
    except ValueError:
        return None


def day_bounds(day: date, tz: tzinfo) -> tuple[float, float]:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def utc() -> tzinfo:
    return UTC


# The card processor's test cards (Luhn-valid). Any other Luhn-valid number is approved.
TEST_CARDS: dict[str, str] = {
    "4242424242424242": "success",
    "4000002500003155": "requires_action",
    "4000000000009995": "insufficient_funds",
    "4000000000000002": "do_not_honor",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
    "4100000000000019": "fraudulent",
}


def luhn_ok(number: str) -> bool:
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0
