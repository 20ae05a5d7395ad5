"""The write side of the audit trail (docs/audit.md): who did what, when, in a hash chain a writer cannot redo.

`record` appends one entry inside the caller's open write transaction (`Database.write()`), so an entry exists
exactly when the audited change committed. Appenders serialise on the one row of `audit_head`: its lock
(`SELECT … FOR UPDATE`; on SQLite the single writer) is held until the commit, so entries are numbered without
gaps in commit order and no two entries ever share a predecessor. Call `record` as the transaction's last change
before it commits (after any money moved): the head is then locked only for the commit itself, and always after
the rows the transaction changed, so appenders can never wait for each other in a cycle.

Each entry's hash is an HMAC-SHA256, under a key derived from the master key, over a versioned, length-prefixed
encoding of every column, the previous entry's hash included (docs/decisions.md #90). Someone who can write to
the database but does not hold the master key can therefore neither edit an entry nor recompute the chain after an
edit; `paygate audit verify` (runtime/audit_verify.py) names any entry that does not check.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType

from sqlalchemy import Connection, Engine, select, update

from runtime.db import Database
from runtime.errors import Unavailable
from runtime.master_key import MasterKeyRing, derive_key
from runtime.schema_audit import ACTION_LENGTH, ACTOR_LENGTH, SUBJECT_LENGTH, audit_head, audit_log
from runtime.settings import Settings

AUDIT_KEY_PURPOSE = "audit-chain/v1"  # runtime/master_key.py: derive_key(settings, purpose)
VERSION = 1  # of the hash encoding (`encode`); a new encoding gets a new number, old entries keep theirs
GENESIS_HASH = "0" * 64  # the predecessor of entry 1 (migration 0012 starts the head with it)
HEAD_NAME = "audit"
SYSTEM = "system"
# Of the stored JSON, escapes included. 16 values of 256 characters outside the BMP are 16 times 3,072 escaped
# characters plus names: about 50,000, under MySQL TEXT's 65,535 bytes (the JSON is ASCII). The longest text a
# caller may send (a refund's reason of 256 emoji) can therefore never make an audited change fail.
MAX_DETAILS_CHARS = 60_000
MAX_DETAIL_KEYS = 16
MAX_DETAIL_TEXT = 256
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # UTC, microseconds: the exact text stored and hashed

DetailValue = str | int | bool | None

_ACTOR = re.compile(r"(?:key:[A-Za-z0-9_.-]{1,64}|cli:[A-Za-z0-9_.-]{1,64}|system)")
_ACTION = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")  # noun.verb, e.g. key.create, refund.create
_SUBJECT = re.compile(r"[A-Za-z0-9_.:/@-]+")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Detail names that say "secret" are refused, so a careless caller of `record` cannot put one into a permanent
# record. Values are not second-guessed: they include callers' free text (a refund's reason), which must never
# make an audited change fail.
_SECRET_NAME = re.compile(r"secret|password|passphrase|private|credential|signature|token")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INT64 = 2**63

_HEAD = select(audit_head.c.last_seq, audit_head.c.last_hash).where(audit_head.c.name == HEAD_NAME)
_LOCK_HEAD = _HEAD.with_for_update()
_INSERT = audit_log.insert()
_ADVANCE = update(audit_head).where(audit_head.c.name == HEAD_NAME)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    recorded_at: str  # TIME_FORMAT, UTC
    actor: str
    action: str
    subject: str
    details: Mapping[str, DetailValue]
    key_id: str
    prev_hash: str
    entry_hash: str
    version: int = VERSION

    @property
    def recorded_at_time(self) -> datetime:
        return datetime.strptime(self.recorded_at, TIME_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class ChainKey:
    """The HMAC key of the chain and its public fingerprint (stored with each entry, so a verifier holding
    several keys, e.g. across a master-key rotation, knows which one to check an entry with)."""

    secret: bytes

    @property
    def key_id(self) -> str:
        return hmac.new(self.secret, b"paygate-audit-key-id", hashlib.sha256).hexdigest()[:16]


class InvalidAuditEntry(ValueError):
    """What a caller of `record` passed breaks the entry's grammar (a bug in that caller, never a user's fault)."""


class AuditNotEnabled(RuntimeError):
    """`record` ran on a database no chain key was given to (`enable`): a wiring bug."""


class AuditTrailUnavailable(Unavailable):
    """The head row is gone: the trail was tampered with or not migrated. Audited changes are refused until an
    operator restores it (docs/audit.md, "When verify fails"); nothing was changed."""

    reason = "AUDIT_TRAIL_UNAVAILABLE"


# The chain key of each writer engine. Keyed by the engine (weakly), so `record` needs only the connection.
_KEYS: weakref.WeakKeyDictionary[Engine, ChainKey] = weakref.WeakKeyDictionary()


def chain_key(settings: Settings) -> ChainKey:
    return ChainKey(derive_key(settings, AUDIT_KEY_PURPOSE))


def chain_keys(settings: Settings) -> list[ChainKey]:
    """The chain's key under every master key of the ring, the current one first: entries made before a master-key
    rotation still verify (docs/audit.md)."""
    return [ChainKey(key) for key in MasterKeyRing.load(settings).derived_keys(AUDIT_KEY_PURPOSE)]


def enable(database: Database, key: ChainKey) -> None:
    """Let `record` append through this database's write transactions, under `key` (idempotent)."""
    _KEYS[database.writer] = key


def key_actor(key_id: str) -> str:
    """The actor of an API caller."""
    return f"key:{key_id}"


def cli_actor(user: str | None = None) -> str:
    """The actor of an operator's `paygate` command: the OS user running it (letters, digits, `_.-` only)."""
    try:
        name = user if user is not None else getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container's arbitrary uid)
        name = ""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]
    return f"cli:{cleaned or 'unknown'}"


def bounded_text(value: str) -> str:
    """Free text an operator typed, made fit for `details`: controls become spaces, at most 256 characters."""
    return _CONTROL.sub(" ", value)[:MAX_DETAIL_TEXT]


def record(
    connection: Connection, *, actor: str, action: str, subject: str, details: Mapping[str, DetailValue]
) -> AuditEntry:
    """Append one entry to the trail inside the caller's open write transaction; it commits or rolls back with it.

    actor: "key:<key_id>" (`key_actor`), "cli:<os user>" (`cli_actor`) or "system". action: "noun.verb" in lower
    case (e.g. "refund.create"). subject: what it acted on (an id). details: a flat JSON object of at most 16
    str/int/bool/None values (text of at most 256 characters) — never a secret (names that say one are refused).
    """
    key = _KEYS.get(connection.engine)
    if key is None:
        raise AuditNotEnabled("record() on a database without a chain key: call runtime.audit.enable() first")
    _check(actor, action, subject)
    details_text = canonical_details(details)
    head = connection.execute(_LOCK_HEAD).first()
    if head is None:
        raise AuditTrailUnavailable("the audit trail's head is missing; the change was refused (see `paygate audit`)")
    recorded_at = datetime.now(UTC).strftime(TIME_FORMAT)  # taken under the lock: times follow the numbers
    entry = AuditEntry(
        seq=head.last_seq + 1,
        recorded_at=recorded_at,
        actor=actor,
        action=action,
        subject=subject,
        details=MappingProxyType(json.loads(details_text)),
        key_id=key.key_id,
        prev_hash=head.last_hash,
        entry_hash="",
    )
    sealed = _seal(entry, details_text, key)
    connection.execute(_INSERT, {**_row(sealed), "details": details_text})
    connection.execute(_ADVANCE, {"last_seq": sealed.seq, "last_hash": sealed.entry_hash})
    return sealed


def _seal(entry: AuditEntry, details_text: str, key: ChainKey) -> AuditEntry:
    return replace(entry, entry_hash=entry_hash(key.secret, entry, details_text))


def _row(entry: AuditEntry) -> dict[str, object]:
    return {
        "seq": entry.seq,
        "version": entry.version,
        "recorded_at": entry.recorded_at,
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "details": entry.details,
        "key_id": entry.key_id,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }


def encode(entry: AuditEntry, details_text: str) -> bytes:
    """The bytes an entry's hash covers (version 1): a tag, then each field as a 4-byte big-endian length and its
    UTF-8 bytes, in a fixed order. Length prefixes make the encoding unambiguous: no two different entries give
    the same bytes, whatever characters their fields hold."""
    if entry.version != 1:
        raise ValueError(f"unknown audit encoding version {entry.version}")
    fields = (
        str(entry.version),
        str(entry.seq),
        entry.recorded_at,
        entry.actor,
        entry.action,
        entry.subject,
        details_text,
        entry.key_id,
        entry.prev_hash,
    )
    parts = [b"paygate-audit\x00"]
    for field in fields:
        data = field.encode("utf-8")
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    return b"".join(parts)


def entry_hash(secret: bytes, entry: AuditEntry, details_text: str) -> str:
    """HMAC-SHA256 of `encode(entry)`, hex. `details_text` is the stored canonical JSON, hashed as stored."""
    return hmac.new(secret, encode(entry, details_text), hashlib.sha256).hexdigest()


def canonical_details(details: Mapping[str, DetailValue]) -> str:
    """The one JSON text of `details`: sorted keys, no spaces, ASCII only (the same bytes on every database)."""
    if len(details) > MAX_DETAIL_KEYS:
        raise InvalidAuditEntry(f"details: at most {MAX_DETAIL_KEYS} keys, got {len(details)}")
    for name, value in details.items():
        _check_detail(name, value)
    text = json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    if len(text) > MAX_DETAILS_CHARS:
        raise InvalidAuditEntry(f"details: at most {MAX_DETAILS_CHARS} characters of JSON, got {len(text)}")
    return text


def _check_detail(name: str, value: DetailValue) -> None:
    if not isinstance(name, str) or not _DETAIL_KEY.fullmatch(name):
        raise InvalidAuditEntry(f"details: key {name!r:.40} must match {_DETAIL_KEY.pattern}")
    if _SECRET_NAME.search(name):
        raise InvalidAuditEntry(f"details: {name!r} looks like a secret; the audit trail never holds one")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InvalidAuditEntry(f"details: {name} is out of the 64-bit range")
        return
    if not isinstance(value, str):
        raise InvalidAuditEntry(f"details: {name} must be text, an integer, a boolean or null")
    if len(value) > MAX_DETAIL_TEXT or _CONTROL.search(value):
        raise InvalidAuditEntry(f"details: {name} must be at most {MAX_DETAIL_TEXT} characters without controls")


def _check(actor: str, action: str, subject: str) -> None:
    if len(actor) > ACTOR_LENGTH or not _ACTOR.fullmatch(actor):
        raise InvalidAuditEntry(f"actor {actor!r:.60} must be key:<key_id>, cli:<user> or system")
    if len(action) > ACTION_LENGTH or not _ACTION.fullmatch(action):
        raise InvalidAuditEntry(f"action {action!r:.60} must be noun.verb in lower case")
    if not 1 <= len(subject) <= SUBJECT_LENGTH or not _SUBJECT.fullmatch(subject):
        raise InvalidAuditEntry(f"subject {subject!r:.60} must be 1-{SUBJECT_LENGTH} characters of [A-Za-z0-9_.:/@-]")
