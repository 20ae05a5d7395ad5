"""Identifiers: a prefix plus 26 characters that sort by creation time (48-bit ms clock + 80 random bits)."""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Two digits per table lookup: 13 lookups of 10 bits instead of 26 divisions (ids are made twice per purchase).
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str, separator: str = "_") -> str:
    """26 Crockford base-32 digits, most significant first, of (ms clock << 80 | 80 random bits)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return prefix + separator + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
