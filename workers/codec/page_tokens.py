"""Page tokens: opaque to callers, tamper-evident, and bound to the owner and query they were issued for.

A token is 32 characters of url-safe base64 over 24 bytes: the cursor (the id of the last posting of the page,
8 bytes big-endian) and the first 16 bytes of HMAC-SHA256(server key, version || owner || user || cursor). The
server key is derived from the master key (runtime/master_key.py), so every worker of a stack accepts every
other worker's tokens, also after a restart. A token that was altered, or that is replayed by another owner or
for another user, fails the MAC: the caller gets INVALID_ARGUMENT and is told to pass `next_page_token`
unchanged. Nothing in a token is ever converted before its MAC has been verified.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct

VERSION = b"paygate-page-token-v1"
PAGE_TOKEN_KEY_PURPOSE = "page-token/v1"  # noqa: S105 - the HKDF purpose of the server key (runtime/master_key.py)
_CURSOR = struct.Struct(">Q")
_MAC_BYTES = 16
TOKEN_CHARS = 32  # base64 of 8 + 16 bytes, no padding
TOKEN_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}", re.ASCII)
MAX_CURSOR = 2**62  # posting ids are positive int64 values


class PageTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a page-token key needs at least 32 bytes")
        self._key = key

    def issue(self, owner: str, user_id: str, cursor: int) -> str:
        if not 0 < cursor <= MAX_CURSOR:
            raise ValueError(f"cursor out of range: {cursor}")
        packed = _CURSOR.pack(cursor)
        raw = packed + self._mac(owner, user_id, packed)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def read(self, owner: str, user_id: str, token: str) -> int | None:
        """The cursor of a token this server issued for `owner` and `user_id`; None for anything else."""
        if TOKEN_PATTERN.fullmatch(token) is None:
            return None
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        packed, mac = raw[: _CURSOR.size], raw[_CURSOR.size :]
        if not hmac.compare_digest(mac, self._mac(owner, user_id, packed)):
            return None
        cursor: int = _CURSOR.unpack(packed)[0]
        return cursor if 0 < cursor <= MAX_CURSOR else None

    def _mac(self, owner: str, user_id: str, packed: bytes) -> bytes:
        # Length-prefixed fields: ("ab", "c") and ("a", "bc") must not sign the same bytes.
        message = b"".join(
            (VERSION, *(struct.pack(">H", len(part)) + part for part in (owner.encode(), user_id.encode())), packed)
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def well_formed(token: str) -> bool:
    """The shape check the decode step applies before the service verifies the MAC."""
    return TOKEN_PATTERN.fullmatch(token) is not None
