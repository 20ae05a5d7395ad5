"""Managing webhook endpoints (docs/events.md, "Webhooks"): add, list, remove, rotate the secret.

An endpoint receives the events that commit after it was added. Its secret is shown once, when it is made; at rest
it is sealed by the master key ring and bound to the endpoint's id, like API key secrets. Rotating gives a new
secret and keeps the old one signing too until it expires, so receivers can switch without losing a delivery.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from paygate.v1 import payment_gateway_pb2 as pb
from runtime import audit
from runtime.db import Database
from runtime.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from runtime.ids import new_id
from runtime.master_key import MasterKeyRing
from workers.store import events as event_rows
from workers.store import webhooks as rows
from workers.store.webhooks import Endpoint

MAX_ENDPOINTS_PER_OWNER = 16
MAX_URL_LENGTH = 2048
DEFAULT_OVERLAP = timedelta(hours=24)
WEBHOOK_SECRET_PURPOSE = "webhook-secret"  # noqa: S105 - the ring's purpose label, not a secret
EVENT_TYPE_NAMES = frozenset(name for name, _ in pb.EventType.items() if name != "EVENT_TYPE_UNSPECIFIED")


@dataclass(frozen=True)
class WithSecret:
    endpoint: Endpoint
    secret: str  # shown once


def check_url(url: str, *, require_https: bool) -> None:
    """An absolute http(s) URL without credentials or whitespace (production: https only)."""
    parts = urlsplit(url)
    allowed = ("https",) if require_https else ("http", "https")
    problem = None
    if not url or len(url) > MAX_URL_LENGTH or not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        problem = f"must be an ASCII URL of at most {MAX_URL_LENGTH} characters without spaces"
    elif parts.scheme not in allowed or not parts.hostname:
        problem = f"must be an absolute {' or '.join(allowed)} URL with a host"
    elif parts.username or parts.password:
        problem = "must not carry credentials; the signature authenticates deliveries"
    if problem:
        raise InvalidArgument([FieldViolation("url", problem)])


def check_types(types: list[str]) -> frozenset[str]:
    unknown = [t for t in types if t not in EVENT_TYPE_NAMES]
    if unknown:
        raise InvalidArgument([FieldViolation("types", f"unknown event type(s) {', '.join(unknown[:3])}")])
    return frozenset(types)


class Endpoints:
    def __init__(self, database: Database, ring: MasterKeyRing, *, require_https: bool) -> None:
        self._db = database
        self._ring = ring
        self._require_https = require_https

    def add(self, owner: str, url: str, types: list[str], now: datetime, *, actor: str = audit.SYSTEM) -> WithSecret:
        """A new endpoint; it and the following changes are kept in the audit trail with their `actor`
        (runtime/audit.py), in the same transaction."""
        check_url(url, require_https=self._require_https)
        wanted = check_types(types)
        secret = "whsec_" + secrets.token_urlsafe(32)
        endpoint_id = new_id("we")
        with self._db.write() as connection:
            existing = rows.endpoints_of(connection, owner)
            same = next((e for e in existing if e.url == url), None)
            if same is not None:
                raise AlreadyExists(
                    f"endpoint {same.endpoint_id} already receives your events at this URL; rotate its secret if "
                    "you lost it",
                    reason="WEBHOOK_ENDPOINT_EXISTS",
                )
            if len(existing) >= MAX_ENDPOINTS_PER_OWNER:
                raise FailedPrecondition(
                    f"an owner has at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints; remove one first",
                    reason="TOO_MANY_WEBHOOK_ENDPOINTS",
                )
            endpoint = Endpoint(
                endpoint_id=endpoint_id,
                owner=owner,
                url=url,
                types=wanted,
                secret_ciphertext=self._seal(secret, endpoint_id),
                previous_secret_ciphertext=None,
                previous_expires_at=None,
                created_at=now,
                cursor_seq=event_rows.last_seq(connection),  # from the next event on
                attempts=0,
                next_attempt_at=None,
                last_error="",
            )
            rows.insert_endpoint(connection, endpoint)
            details = {"owner": owner, "url": audit.bounded_text(url), "types": audit.bounded_text(",".join(types))}
            audit.record(connection, actor=actor, action="webhook.add", subject=endpoint.endpoint_id, details=details)
        return WithSecret(endpoint, secret)

    def of_owner(self, owner: str) -> list[Endpoint]:
        with self._db.read() as connection:
            return rows.endpoints_of(connection, owner)

    def remove(self, owner: str, endpoint_id: str, now: datetime, *, actor: str = audit.SYSTEM) -> Endpoint:
        with self._db.write() as connection:
            current = rows.endpoint_by_id(connection, owner, endpoint_id)
            if current is None or not rows.remove(connection, owner, endpoint_id, now):
                raise NotFound(f"no webhook endpoint {endpoint_id} of yours")
            details = {"owner": owner, "url": audit.bounded_text(current.url)}
            audit.record(connection, actor=actor, action="webhook.remove", subject=endpoint_id, details=details)
        return current

    def rotate(
        self,
        owner: str,
        endpoint_id: str,
        now: datetime,
        overlap: timedelta = DEFAULT_OVERLAP,
        *,
        actor: str = audit.SYSTEM,
    ) -> WithSecret:
        """A new secret; the current one keeps signing too for `overlap`."""
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self._db.write() as connection:
            current = rows.endpoint_by_id(connection, owner, endpoint_id)
            if current is None:
                raise NotFound(f"no webhook endpoint {endpoint_id} of yours")
            ciphertext = self._seal(secret, endpoint_id)
            rows.rotate(connection, owner, endpoint_id, ciphertext, current.secret_ciphertext, now + overlap)
            details = {"owner": owner, "previous_expires_at": (now + overlap).isoformat()}
            audit.record(connection, actor=actor, action="webhook.rotate_secret", subject=endpoint_id, details=details)
        rotated = replace(
            current,
            secret_ciphertext=ciphertext,
            previous_secret_ciphertext=current.secret_ciphertext,
            previous_expires_at=now + overlap,
        )
        return WithSecret(rotated, secret)

    def signing_secrets(self, endpoint: Endpoint, now: datetime) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one until it expires."""
        found = [self._open(endpoint.secret_ciphertext, endpoint.endpoint_id)]
        previous, expires = endpoint.previous_secret_ciphertext, endpoint.previous_expires_at
        if previous is not None and expires is not None and now < expires:
            found.append(self._open(previous, endpoint.endpoint_id))
        return found

    def _seal(self, secret: str, endpoint_id: str) -> bytes:
        return self._ring.seal(secret.encode(), purpose=WEBHOOK_SECRET_PURPOSE, context=endpoint_id)

    def _open(self, blob: bytes, endpoint_id: str) -> str:
        return self._ring.open(blob, purpose=WEBHOOK_SECRET_PURPOSE, context=endpoint_id).decode()
