"""Yuan strings <-> fen, exactly: Alipay states every amount as a yuan string with two decimals ("12.30").

No float ever touches an amount: a binary fraction cannot hold 0.1 exactly, and one fen lost in a conversion is a
reconciliation break. Anything that is not plainly `digits.dd` (an exponent, a third decimal, a sign where none is
allowed, spaces) is refused rather than guessed at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# Alipay's times are Beijing wall-clock times without an offset; China has no daylight saving, so a fixed +08:00
# offset is exact (and needs no tz database on the host).
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")

_YUAN = re.compile(r"(-?)(0|[1-9][0-9]{0,15})\.([0-9]{2})")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def to_yuan(amount_minor: int) -> str:
    """12345 -> "123.45". Alipay takes amounts from 0.01 up, so zero and negatives are a caller's bug."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ValueError(f"an Alipay amount must be a positive number of fen, not {amount_minor!r}")
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def parse_yuan(text: object, *, allow_negative: bool = False) -> int:
    """Parse "12.30" as 1230. Exactly two decimals; a leading minus only where the document states refunds negative."""
    match = _YUAN.fullmatch(text) if isinstance(text, str) else None
    if match is None or (match.group(1) and not allow_negative):
        raise ValueError(f"not a yuan amount with exactly two decimals: {text!r}")
    fen = int(match.group(2)) * 100 + int(match.group(3))
    return -fen if match.group(1) else fen


def china_time(moment: datetime) -> str:
    """The `yyyy-MM-dd HH:mm:ss` Beijing time Alipay expects. A naive datetime is taken as UTC, as the store does."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).strftime(_TIME_FORMAT)


def parse_china_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    return datetime.strptime(text.strip(), _TIME_FORMAT).replace(tzinfo=CHINA)
