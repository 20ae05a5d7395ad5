"""Yuan strings <-> fen, exactly: Alipay states every amount as a yuan string with two decimals ("12.30").

No float ever touches an amount: a binary fraction cannot hold 0.1 exactly, and one fen lost in a conversion is a
reconciliation break. Anything that is not plainly `digits.dd` (an exponent, a third decimal, a sign where none is
allowed, spaces) is refused rather than guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime

from workers.channels.base import CHINA_TIME, parse_yuan

__all__ = ["CHINA", "china_time", "parse_china_time", "parse_yuan", "to_yuan"]

# Alipay's times are Beijing wall-clock times without an offset.
CHINA = CHINA_TIME
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def to_yuan(amount_minor: int) -> str:
    """12345 -> "123.45". Alipay takes amounts from 0.01 up, so zero and negatives are a caller's bug."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ValueError(f"an Alipay amount must be a positive number of fen, not {amount_minor!r}")
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def china_time(moment: datetime) -> str:
    """The `yyyy-MM-dd HH:mm:ss` Beijing time Alipay expects. A naive datetime is taken as UTC, as the store does."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).strftime(_TIME_FORMAT)


def parse_china_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    return datetime.strptime(text.strip(), _TIME_FORMAT).replace(tzinfo=CHINA)
