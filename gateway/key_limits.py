"""The limits of one API key (docs/security.md, "Rate limits and quotas"): what an operator sets, how it is
written on the command line, and what applies once the stack's defaults fill the gaps.

A key's stored limit is NULL when the operator did not set it: the stack's default (runtime/settings.py) applies,
so changing a default changes every key that has none of its own. A rate of 0 means no limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from runtime.settings import Settings

MAX_RATE_PER_S = 1_000_000.0
MAX_BURST = 10_000_000
MAX_CONCURRENT = 1_000_000
_RATE = re.compile(r"(?P<count>[0-9]+(?:\.[0-9]+)?)(?:/(?P<unit>s|sec|m|min|h|hour))?", re.ASCII)
_SECONDS_PER_UNIT = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
# Words an operator types instead of a number: "default" forgets the key's own value, "off" removes the limit.
DEFAULT_WORD = "default"
OFF_WORD = "off"


@dataclass(frozen=True)
class KeyLimits:
    """A key's own limits, as stored; None: the stack's default."""

    rate_per_s: float | None = None
    burst: int | None = None
    user_rate_per_s: float | None = None
    user_burst: int | None = None
    max_concurrent_calls: int | None = None

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class EffectiveLimits:
    """What the gateway enforces for a key: its own limits, else the stack's defaults. 0: no limit."""

    rate_per_s: float
    burst: int
    user_rate_per_s: float
    user_burst: int
    max_concurrent_calls: int


def effective(limits: KeyLimits, settings: Settings) -> EffectiveLimits:
    """A key's own limits, else the stack's defaults. A key with a rate of its own but no burst gets two seconds'
    worth of calls (at least one), not the default burst, which belongs to the default rate."""

    def burst(own_rate: float | None, own_burst: int | None, default: int) -> int:
        if own_burst is not None:
            return own_burst
        return default if own_rate is None else max(1, math.ceil(2 * own_rate))

    key_rate, user_rate = limits.rate_per_s, limits.user_rate_per_s
    concurrent = limits.max_concurrent_calls
    return EffectiveLimits(
        rate_per_s=float(settings.default_key_rate_per_s if key_rate is None else key_rate),
        burst=burst(key_rate, limits.burst, settings.default_key_burst),
        user_rate_per_s=float(settings.default_user_rate_per_s if user_rate is None else user_rate),
        user_burst=burst(user_rate, limits.user_burst, settings.default_user_burst),
        max_concurrent_calls=settings.default_max_concurrent_calls if concurrent is None else concurrent,
    )


def parse_rate(text: str, what: str) -> float:
    """`50/s`, `50`, `300/min`, `1000/h` → calls per second; `off` → 0 (no limit). ValueError names `what`."""
    value = text.strip().lower()
    if value == OFF_WORD:
        return 0.0
    match = _RATE.fullmatch(value)
    if match is None:
        raise ValueError(f"{what} must look like 50/s, 300/min, 1000/h or off, got {text!r}")
    rate = float(match["count"]) / _SECONDS_PER_UNIT[match["unit"]]
    if not math.isfinite(rate) or not 0 < rate <= MAX_RATE_PER_S:
        raise ValueError(f"{what} must be more than 0 and at most {MAX_RATE_PER_S:g}/s (or off), got {text!r}")
    return rate


def parse_count(text: str, what: str, *, maximum: int, allow_off: bool) -> int:
    """A positive whole number (`off` → 0 where allowed). ValueError names `what`."""
    value = text.strip().lower()
    if allow_off and value == OFF_WORD:
        return 0
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        extra = " (or off)" if allow_off else ""
        raise ValueError(f"{what} must be a whole number from 1 to {maximum}{extra}, got {text!r}")
    return int(value)


def parse_changes(
    *,
    rate: str | None,
    burst: str | None,
    user_rate: str | None,
    user_burst: str | None,
    max_concurrent: str | None,
) -> dict[str, float | int | None]:
    """The limits given on a command line, by column; `default` → None (the stack's default). Omitted: absent."""
    parsers = {
        "rate_per_s": (rate, lambda t: parse_rate(t, "--rate")),
        "burst": (burst, lambda t: parse_count(t, "--burst", maximum=MAX_BURST, allow_off=False)),
        "user_rate_per_s": (user_rate, lambda t: parse_rate(t, "--user-rate")),
        "user_burst": (user_burst, lambda t: parse_count(t, "--user-burst", maximum=MAX_BURST, allow_off=False)),
        "max_concurrent_calls": (
            max_concurrent,
            lambda t: parse_count(t, "--max-concurrent", maximum=MAX_CONCURRENT, allow_off=True),
        ),
    }
    changes: dict[str, float | int | None] = {}
    for column, (given, parse) in parsers.items():
        if given is None:
            continue
        changes[column] = None if given.strip().lower() == DEFAULT_WORD else parse(given)
    return changes


def describe_rate(rate_per_s: float) -> str:
    """A rate as an operator wrote it, for messages and listings."""
    if rate_per_s <= 0:
        return "no limit"
    if rate_per_s >= 1:
        return f"{rate_per_s:g}/s"
    return f"{rate_per_s * 60:g}/min"
