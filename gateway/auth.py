"""Verify a call's signature (docs/signing.md): every rule, in an order that spends Redis only on signed calls.

1. all four headers present and well formed            → UNAUTHENTICATED (missing / malformed)
2. timestamp within ±timestamp_skew_s of our clock      → UNAUTHENTICATED (timestamp_skew)
3. key id known and not revoked                         → UNAUTHENTICATED (unknown_key / revoked_key)
4. HMAC over the exact request bytes matches (const.)   → UNAUTHENTICATED (bad_signature)
5. nonce not seen for this key in the last nonce_ttl_s  → UNAUTHENTICATED (replayed_nonce)
6. the key's scopes allow the method                    → PERMISSION_DENIED

The nonce is recorded only after the signature verifies, so unsigned traffic cannot fill Redis or burn a
legitimate caller's nonces. The same Redis round trip reads the key-revocation generation (see KeyCache).

Rules 1-3 need only the call's headers, so the gateway applies them (`check_headers`) before it waits for the
request message: an unsigned or unknown caller is refused at once and never holds a slot while "sending" a body
(docs/architecture.md, "Calls that never finish"). Rules 4-6 (`verify_body`) need the body.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.keystore import KEYS_GENERATION, KeyStore, KeyWithSecret
from gateway.nonces import NonceStore
from paygate.scopes import METHOD_PATHS, allows
from paygate.signing import MalformedSignature, SignedHeaders, parse_signed_headers, signature_matches
from runtime.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class AuthenticatedCaller:
    key_id: str
    owner: str


@dataclass(frozen=True)
class CheckedHeaders:
    """The outcome of the header phase: well-formed signature headers of a usable key."""

    headers: SignedHeaders
    key: KeyWithSecret


class AuthFailure(Unauthenticated):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class KeyCache:
    """API keys by id, read from the database at most every `ttl_s` per key (and at once after a change).

    `paygate keys create/revoke` bump a generation counter in Redis; the gateway reads it with every nonce check
    and drops its cache when it moves, so a revoked key stops working on the next call. The TTL is the backstop
    for a revocation made while Redis was unreachable. Bounded in size, so unknown-key floods cannot grow it.
    """

    def __init__(self, keystore: KeyStore, ttl_s: float, max_entries: int = 10_000) -> None:
        self._keystore = keystore
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[KeyWithSecret | None, float]] = OrderedDict()
        self.generation = "0"

    async def get(self, key_id: str) -> KeyWithSecret | None:
        now = time.monotonic()
        cached = self._entries.get(key_id)
        if cached is not None and now - cached[1] < self._ttl_s:
            self._entries.move_to_end(key_id)
            return cached[0]
        entry = await asyncio.to_thread(self._keystore.lookup, key_id)
        self._entries[key_id] = (entry, now)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return entry

    def observe_generation(self, generation: str) -> bool:
        """Note the generation seen in Redis; True (and the cache cleared) when it moved."""
        if generation == self.generation:
            return False
        self.generation = generation
        self._entries.clear()
        return True


class Authenticator:
    def __init__(
        self,
        keys: KeyCache,
        client: aioredis.Redis,
        prefix: str,
        *,
        timestamp_skew_s: int,
        nonce_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._prefix = prefix
        self._skew_s = timestamp_skew_s
        self._nonce_ttl_s = nonce_ttl_s
        self._clock = clock
        self._nonces = NonceStore(client, f"{prefix}{KEYS_GENERATION}", nonce_ttl_s)

    async def authenticate(
        self, path: str, metadata: Iterable[tuple[str, str | bytes]], body: bytes
    ) -> AuthenticatedCaller:
        """Every rule at once (the header phase, then the body phase)."""
        headers = await self.check_headers(metadata)
        return await self.verify_body(path, headers, body)

    async def check_headers(self, metadata: Iterable[tuple[str, str | bytes]]) -> CheckedHeaders:
        """Rules 1-3, from the headers alone: present and well formed, timestamp in skew, key usable."""
        try:
            headers = parse_signed_headers(metadata)
        except MalformedSignature as error:
            raise AuthFailure(error.reason, str(error)) from None

        offset_s = int(self._clock()) - int(headers.timestamp)
        if abs(offset_s) > self._skew_s:
            raise AuthFailure(
                "timestamp_skew",
                f"x-paygate-timestamp is {abs(offset_s)} s {'behind' if offset_s > 0 else 'ahead of'} the "
                f"gateway's clock (limit {self._skew_s} s); sync the caller's clock and sign a new request",
            )
        return CheckedHeaders(headers, await self._usable_key(headers.key_id))

    async def verify_body(self, path: str, checked: CheckedHeaders, body: bytes) -> AuthenticatedCaller:
        """Rules 4-6: the signature over the exact body, the nonce (with the revocation generation), the scope."""
        headers, entry = checked.headers, checked.key
        if not signature_matches(entry.secret, path, headers.timestamp, headers.nonce, body, headers.signature):
            raise AuthFailure(
                "bad_signature",
                "signature does not match: sign PAYGATE-HMAC-SHA256, the method path, the timestamp and nonce "
                "as sent, and the SHA-256 of the exact request bytes, with the key's secret",
            )

        nonce_key = f"{self._prefix}nonce:{headers.key_id}:{headers.nonce}"
        nonce = await self._nonces.check(nonce_key)
        if self._keys.observe_generation(nonce.generation):
            entry = await self._usable_key(headers.key_id)  # keys changed: re-check revocation now
        if not nonce.fresh:
            raise AuthFailure(
                "replayed_nonce",
                f"nonce already used within the last {self._nonce_ttl_s} s; every call needs a new nonce",
            )
        if not allows(entry.key.scopes, path):
            raise PermissionDenied(
                f"key {headers.key_id} lacks the scope {METHOD_PATHS.get(path, '?')} that {path} needs; "
                "an operator can grant it with a new key (paygate keys create --scopes ...)"
            )
        return AuthenticatedCaller(key_id=headers.key_id, owner=entry.key.owner)

    async def _usable_key(self, key_id: str) -> KeyWithSecret:
        entry = await self._keys.get(key_id)
        if entry is None:
            raise AuthFailure("unknown_key", f"unknown key id {key_id!r}")
        if entry.key.revoked:
            raise AuthFailure("revoked_key", f"key {key_id!r} has been revoked; create a new key")
        return entry
