"""Verify a call's signature (docs/signing.md): every rule, in an order that spends Redis only on signed calls.

1. all four headers present and well formed            → UNAUTHENTICATED (missing / malformed)
2. timestamp within ±timestamp_skew_s of our clock      → UNAUTHENTICATED (timestamp_skew)
3. key id known and not revoked                         → UNAUTHENTICATED (unknown_key / revoked_key)
4. HMAC over the exact request bytes matches (const.)   → UNAUTHENTICATED (bad_signature)
5. the key's and the user's token buckets hold a token  → RESOURCE_EXHAUSTED (RATE_LIMITED_KEY / _USER)
6. nonce not seen for this key in the last nonce_ttl_s  → UNAUTHENTICATED (replayed_nonce)
7. the key's scopes allow the method                    → PERMISSION_DENIED

The signature verifies with the key's secret, or during a rotation's grace with its previous one (docs/security.md,
"Key lifecycle"). The nonce is recorded only after the signature verifies, so unsigned traffic cannot fill Redis
or burn a legitimate caller's nonces. Rules 5 and 6 are one Redis script, which also reads the key-revocation
generation (see KeyCache); a rate-limited call records neither a token nor its nonce (gateway/nonces.py).

Rules 1-3 need only the call's headers, so the gateway applies them (`check_headers`) before it waits for the
request message: an unsigned or unknown caller is refused at once and never holds a slot while "sending" a body
(docs/architecture.md, "Calls that never finish"). Rules 4-7 (`verify_body`) need the body.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis

from gateway.key_limits import EffectiveLimits, describe_rate, effective
from gateway.keystore import KEYS_GENERATION, KeyStore, KeyWithSecret
from gateway.nonces import Buckets, NonceCheck, NonceStore
from gateway.wire_scan import user_of
from paygate.scopes import METHOD_PATHS, allows
from paygate.signing import MalformedSignature, SignedHeaders, parse_signed_headers, signature_matches
from runtime.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from runtime.settings import Settings

RATE_LIMITED_KEY = "RATE_LIMITED_KEY"
RATE_LIMITED_USER = "RATE_LIMITED_USER"
RATE_LIMIT_REASONS = frozenset({RATE_LIMITED_KEY, RATE_LIMITED_USER})


@dataclass(frozen=True)
class AuthenticatedCaller:
    key_id: str
    owner: str
    max_concurrent_calls: int = 0  # unary calls of this key in flight through this gateway; 0: no limit
    signed_with: str = "current"  # which secret signed the call: "current", or "previous" during a rotation's grace


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
        defaults: Settings,
        on_verified: Callable[[AuthenticatedCaller], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._on_verified = on_verified
        self._keys = keys
        self._prefix = prefix
        self._skew_s = timestamp_skew_s
        self._nonce_ttl_s = nonce_ttl_s
        self._defaults = defaults
        self._clock = clock
        self._nonces = NonceStore(client, f"{prefix}{KEYS_GENERATION}", nonce_ttl_s, clock)

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
        """Rules 4-7: the signature over the exact body, the buckets and the nonce (with the revocation
        generation), the scope."""
        headers, entry = checked.headers, checked.key
        secret = self._matching_secret(path, headers, entry, body)
        if secret is None:
            # Perhaps the key was rotated since we cached it: look at the generation (one GET, only for calls that
            # fail here) and, if keys changed, try once more with the key as it is now.
            if self._keys.observe_generation(await self._nonces.generation()):
                entry = await self._usable_key(headers.key_id)
                secret = self._matching_secret(path, headers, entry, body)
            if secret is None:
                raise _bad_signature()
        limits = effective(entry.key.limits, self._defaults)
        user = user_of(path, body) if limits.user_rate_per_s > 0 else None
        nonce_key = f"{self._prefix}nonce:{headers.key_id}:{headers.nonce}"
        nonce = await self._nonces.check(nonce_key, self._buckets(headers.key_id, limits, user))
        if self._keys.observe_generation(nonce.generation):
            # Keys changed: re-check revocation, and the signature (a rotation may have dropped the secret used).
            entry = await self._usable_key(headers.key_id)
            secret = self._matching_secret(path, headers, entry, body)
            if secret is None:
                raise _bad_signature()
        if nonce.limited is not None:
            raise _rate_limited(headers.key_id, limits, nonce, user)
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
        caller = AuthenticatedCaller(headers.key_id, entry.key.owner, limits.max_concurrent_calls, secret)
        if self._on_verified is not None:
            self._on_verified(caller)
        return caller

    def _matching_secret(self, path: str, headers: SignedHeaders, entry: KeyWithSecret, body: bytes) -> str | None:
        """Which of the key's secrets signed the call (rule 4): "current", else "previous" within its grace."""
        args = (path, headers.timestamp, headers.nonce, body, headers.signature)
        if signature_matches(entry.secret, *args):
            return "current"
        previous = entry.previous_valid_at(datetime.fromtimestamp(self._clock(), UTC))
        if previous is not None and signature_matches(previous, *args):
            return "previous"
        return None

    def _buckets(self, key_id: str, limits: EffectiveLimits, user: bytes | None) -> Buckets:
        user_bucket = None
        if user is not None:
            # Per key and user (docs/decisions.md #71); the user's bytes as they are (at most 64, gateway/wire_scan.py).
            user_bucket = f"{self._prefix}rate:user:{key_id}:{user.hex()}"
        return Buckets(
            f"{self._prefix}rate:key:{key_id}",
            limits.rate_per_s,
            limits.burst,
            user_bucket,
            limits.user_rate_per_s,
            limits.user_burst,
        )

    async def _usable_key(self, key_id: str) -> KeyWithSecret:
        entry = await self._keys.get(key_id)
        if entry is None:
            raise AuthFailure("unknown_key", f"unknown key id {key_id!r}")
        if entry.key.revoked:
            raise AuthFailure("revoked_key", f"key {key_id!r} has been revoked; create a new key")
        return entry


def _rate_limited(key_id: str, limits: EffectiveLimits, check: NonceCheck, user: bytes | None) -> ResourceExhausted:
    retry = f"retry after {check.retry_after_ms} ms (the call was not applied and its nonce not used)"
    if check.limited == "user":
        shown = (user or b"").decode("utf-8", "replace")
        return ResourceExhausted(
            f"calls of key {key_id} for one user are limited to {describe_rate(limits.user_rate_per_s)} (burst "
            f"{limits.user_burst}), and user {shown!r} has reached that limit; {retry}",
            reason=RATE_LIMITED_USER,
            retry_after_ms=check.retry_after_ms,
        )
    return ResourceExhausted(
        f"key {key_id} is limited to {describe_rate(limits.rate_per_s)} (burst {limits.burst}) and has reached that "
        f"limit; {retry}",
        reason=RATE_LIMITED_KEY,
        retry_after_ms=check.retry_after_ms,
    )


def _bad_signature() -> AuthFailure:
    return AuthFailure(
        "bad_signature",
        "signature does not match: sign PAYGATE-HMAC-SHA256, the method path, the timestamp and nonce as sent, and "
        "the SHA-256 of the exact request bytes, with the key's secret",
    )
