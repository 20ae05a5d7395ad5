"""Wallet purchases committed in groups (docs/ledger.md, "Group commit").

A batch is planned in memory and written in bulk, the way TigerBeetle applies a batch of transfers:

1. the in-flight guards of the batch's order ids and the locks of its wallets are taken in one Redis round trip
   (docs/ledger.md): an order id being served elsewhere (or twice in one batch) gets ABORTED with a retry delay
   exactly as on the one-at-a-time path, and a purchase whose wallet is busy (a transfer, a refund or another
   worker holds it) goes to the one-at-a-time path, which waits for it;
2. one write transaction reads the batch's idempotency records (one query): a purchase whose order id already
   committed gets its stored answer (or ALREADY_EXISTS for a different request); then it reads the batch's
   wallets and credit accounts (one query), and walks the purchases in arrival order against running balances: a
   purchase the wallet cannot cover, or whose credit would pass an account's ceiling, is refused with its own
   error and leaves no trace, while its batch-mates go on; a wallet whose row carries a fence at or above our
   lease's (our lease expired and a newer holder wrote) is left out and retried one at a time;
3. the accepted purchases are written with one statement per table (entries, postings, payments, idempotency
   records) and one balance update per account — each wallet's debits as one fenced update, each hot account's
   credits (platform revenue, a best-selling creator) as one increment — all in one executemany;
4. one commit — one fsync — then the guards and locks are released in one round trip, and only then is each
   purchase answered.

Every balance update stays conditional in SQL exactly as in `ledger/movement.py`. If one matches no row (on
PostgreSQL or MariaDB another process may have moved an account between our read and our write), or a unique
key was taken meanwhile, the whole transaction rolls back — nothing of the batch was written — and each
purchase is retried on the one-at-a-time path, which settles it with the usual retries and replays.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import redis
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from runtime.errors import AlreadyExists
from runtime.ids import new_id
from runtime.redis_support import run_scripts
from workers.domain.types import PLATFORM_SUBJECT, AccountKind, PaymentRecord, PaymentStatus, PaymentType
from workers.execution.group_commit import Pending
from workers.execution.idempotency import Claim
from workers.execution.keyed import is_transient
from workers.execution.locks import LockLease
from workers.ledger import accounts
from workers.ledger.accounts import Account, NewEntry, Posting
from workers.ledger.movement import balance_limit_exceeded, updates_last
from workers.operations.context import ORDER_SCOPE, Context, insufficient
from workers.store import records

KIND = "wallet_purchase"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurchaseIntent:
    """A priced, split, PENDING wallet purchase and its idempotency key (whose in-flight guard the batch takes
    with its wallet locks; the record's unique key still decides any race)."""

    record: PaymentRecord
    claim: Claim
    resource: str  # the wallet's lock


class SinglePath(Exception):
    """Not committed by this batch, nothing written: run the purchase on the one-at-a-time path."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"group commit passed the purchase on: {reason}")
        self.reason = reason


class _Conflict(Exception):
    """A conditional balance update matched no row: roll the batch back."""


AccountKey = tuple[AccountKind, str, str]  # kind, subject, currency


@dataclass
class _Plan:
    """What the batch will write, decided in memory before anything is written."""

    accepted: list[tuple[Pending[PurchaseIntent], list[tuple[AccountKey, int]]]] = field(default_factory=list)
    refused: list[tuple[Pending[PurchaseIntent], Exception]] = field(default_factory=list)
    replayed: list[tuple[Pending[PurchaseIntent], PaymentRecord]] = field(default_factory=list)
    stale: dict[str, int] = field(default_factory=dict)  # wallet lock → the fence its row carries
    passed_on: list[tuple[Pending[PurchaseIntent], str]] = field(default_factory=list)
    known: dict[AccountKey, Account] = field(default_factory=dict)  # the accounts that exist
    deltas: dict[AccountKey, int] = field(default_factory=lambda: defaultdict(int))  # net change per account
    fences: dict[AccountKey, int] = field(default_factory=dict)  # debited wallet → our lease's fence
    committed: list[tuple[Pending[PurchaseIntent], PaymentRecord]] = field(default_factory=list)


def commit_purchases(ctx: Context, batch: list[Pending[PurchaseIntent]]) -> None:
    """The group committer's `commit` for wallet purchases: settles every future in `batch`, after the batch's
    guards and locks are released (a purchase passed on must find its key free)."""
    idempotency, locks = ctx.executor.idempotency, ctx.executor.locks
    token = secrets.token_hex(16)
    claims = [pending.item.claim for pending in batch]
    resources = sorted({pending.item.resource for pending in batch})
    # The in-flight guards of every key and the lock of every wallet: one round trip.
    started = time.perf_counter()
    replies = run_scripts(
        locks.client,
        idempotency.claim_calls(claims, token) + locks.acquire_calls(resources, token, ctx.executor.lock_lease_ms),
    )
    taken = (locks.lease_from(r, token, reply) for r, reply in zip(resources, replies[len(batch) :], strict=True))
    leases = {lease.resource: lease for lease in taken if lease is not None}
    locked = _phase(ctx, "redis", started)
    locks.observe_batch(len(leases), locked - started)
    outcomes: list[tuple[Pending[PurchaseIntent], object]] = []
    guarded: list[Claim] = []
    ready: list[Pending[PurchaseIntent]] = []
    for pending, reply in zip(batch, replies[: len(batch)], strict=True):
        in_flight = idempotency.in_flight_error(pending.item.claim, reply)
        if in_flight is not None:  # the same order id is being served elsewhere, or twice in this batch
            outcomes.append((pending, in_flight))
            continue
        guarded.append(pending.item.claim)
        if pending.item.resource in leases:
            ready.append(pending)
        else:  # the wallet is busy: the one-at-a-time path waits for it
            outcomes.append((pending, SinglePath("lock_busy")))
    try:
        if ready:
            outcomes.extend(_commit_ready(ctx, ready, leases))
    finally:
        committed = _phase(ctx, "transaction", locked)
        _release(ctx, guarded, token, list(leases.values()))
        _phase(ctx, "release", committed)
    for pending, outcome in outcomes:
        _settle(ctx, pending, outcome)
    if ctx.metrics is not None:
        ctx.metrics.batch_size.labels(KIND).observe(len(batch))


def _release(ctx: Context, guarded: list[Claim], token: str, leases: list[LockLease]) -> None:
    """Guards and locks in one round trip; if Redis fails here they expire by themselves within one lease."""
    calls = ctx.executor.idempotency.release_calls(guarded, token) + ctx.executor.locks.release_calls(leases)
    try:
        run_scripts(ctx.executor.locks.client, calls)
    except redis.RedisError as error:
        log.warning("group commit release failed; it will expire", extra={"fields": {"error": type(error).__name__}})


def _settle(ctx: Context, pending: Pending[PurchaseIntent], outcome: object) -> None:
    if isinstance(outcome, SinglePath):
        _count(ctx, f"single_{outcome.reason}")
        pending.future.set_exception(outcome)
    elif isinstance(outcome, Exception):
        _count(ctx, "refused")
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)


def _commit_ready(
    ctx: Context, ready: list[Pending[PurchaseIntent]], leases: dict[str, LockLease]
) -> list[tuple[Pending[PurchaseIntent], object]]:
    started = time.perf_counter()
    try:
        with ctx.db.write() as connection:
            begun = _phase(ctx, "begin", started)  # the writer gate (SQLite) and BEGIN
            plan = _plan(ctx, connection, ready, leases)
            if plan.accepted:
                _write(ctx, connection, plan)
            written = _phase(ctx, "statements", begun)
        _phase(ctx, "commit", written)
    except (_Conflict, IntegrityError) as error:
        reason = "conflict" if isinstance(error, _Conflict) else "unique_key"
        return [(pending, SinglePath(reason)) for pending in ready]
    except DBAPIError as error:
        if not is_transient(error):
            raise  # the committer hands it to every caller: the boundary maps it (UNAVAILABLE)
        return [(pending, SinglePath("deadlock")) for pending in ready]
    for resource, database_fence in plan.stale.items():
        ctx.executor.locks.raise_fence(resource, database_fence)  # so the retry's lease is above the row's
    for _pending, record in plan.committed:
        ctx.count_payment(record)
    _count(ctx, "committed", len(plan.committed))
    _count(ctx, "replayed", len(plan.replayed))
    return [
        *((pending, SinglePath(reason)) for pending, reason in plan.passed_on),
        *plan.replayed,
        *plan.refused,
        *plan.committed,
    ]


def _plan(
    ctx: Context, connection: Connection, ready: list[Pending[PurchaseIntent]], leases: dict[str, LockLease]
) -> _Plan:
    plan = _Plan()
    fresh = _first_time(ctx, connection, ready, plan)
    wanted: set[tuple[AccountKind, str]] = set()
    for pending in fresh:
        record = pending.item.record
        wanted |= {(AccountKind.WALLET, record.user_id), (AccountKind.REVENUE, PLATFORM_SUBJECT)}
        if record.payee_id:
            wanted.add((AccountKind.PAYABLE, record.payee_id))
    plan.known.update(accounts.find_accounts(connection, wanted))
    for pending in fresh:
        record = pending.item.record
        wallet_key = (AccountKind.WALLET, record.user_id, record.currency)
        wallet = plan.known.get(wallet_key)
        lease = leases[pending.item.resource]
        if wallet is not None and wallet.fence >= lease.fence:
            plan.stale[pending.item.resource] = wallet.fence
            plan.passed_on.append((pending, "stale_fence"))
            continue
        credits = [((AccountKind.REVENUE, PLATFORM_SUBJECT, record.currency), record.platform_fee_minor)]
        if record.payee_id:
            credits.append(((AccountKind.PAYABLE, record.payee_id, record.currency), record.creator_amount_minor))
        refusal = _refusal(plan, wallet, record, credits)
        if refusal is not None:
            plan.refused.append((pending, refusal))
            continue
        plan.fences[wallet_key] = lease.fence
        changes = [(key, amount) for key, amount in [(wallet_key, -record.amount_minor), *credits] if amount != 0]
        for key, amount in changes:
            plan.deltas[key] += amount
        plan.accepted.append((pending, changes))
    return plan


def _first_time(
    ctx: Context, connection: Connection, ready: list[Pending[PurchaseIntent]], plan: _Plan
) -> list[Pending[PurchaseIntent]]:
    """The purchases whose order id is new; the others are answered from their stored result, as the
    one-at-a-time path answers them (workers/execution/idempotency.py)."""
    idempotency = ctx.executor.idempotency
    stored = idempotency.find_many(connection, ORDER_SCOPE, {(p.item.claim.owner, p.item.claim.key) for p in ready})
    fresh: list[Pending[PurchaseIntent]] = []
    for pending in ready:
        claim = pending.item.claim
        earlier = stored.get((claim.owner, claim.key))
        if earlier is not None:
            try:
                answer = idempotency.replay(earlier, claim.request_hash, claim.scope, claim.key)
            except AlreadyExists as error:
                plan.refused.append((pending, error))
            else:
                plan.replayed.append((pending, PaymentRecord.from_json(answer)))
        else:
            fresh.append(pending)
    return fresh


def _refusal(
    plan: _Plan, wallet: Account | None, record: PaymentRecord, credits: list[tuple[AccountKey, int]]
) -> Exception | None:
    """The purchase's own error against the balances the batch has reached so far, or None."""
    if wallet is None:
        return insufficient(record.user_id, record.amount_minor, record.currency, None)
    available = wallet.balance_minor + plan.deltas[(wallet.kind, wallet.subject, wallet.currency)]
    if available < record.amount_minor:
        return insufficient(
            record.user_id, record.amount_minor, record.currency, replace(wallet, balance_minor=available)
        )
    for key, amount_minor in credits:
        kind, subject, currency = key
        known = plan.known.get(key)
        before = (known.balance_minor if known else 0) + plan.deltas[key]
        if before + amount_minor > kind.balance_range[1]:
            return balance_limit_exceeded(known or Account(0, kind, subject, currency, before, 0), amount_minor)
    return None


def _write(ctx: Context, connection: Connection, plan: _Plan) -> None:
    """Entries, postings, payments and idempotency records in one statement each; one update per account.
    Credit accounts that do not exist yet are created here, for accepted purchases only: a refused purchase
    leaves no trace, not even an empty account."""
    now = plan.accepted[0][0].item.record.created_at
    for kind, subject, currency in {key for _, changes in plan.accepted for key, _ in changes} - plan.known.keys():
        plan.known[(kind, subject, currency)] = accounts.ensure_account(connection, kind, subject, currency, now)
    entries: list[NewEntry] = []
    for pending, changes in plan.accepted:
        record = pending.item.record
        entry = NewEntry(
            entry_id=new_id("je"),
            kind=PaymentType.PURCHASE.value,
            owner=record.owner,
            payment_id=record.payment_id,
            reference_id=record.payment_id,
            postings=[Posting(plan.known[key].account_id, amount, record.currency) for key, amount in changes],
            now=record.created_at,
        )
        entries.append(entry)
        plan.committed.append((pending, replace(record, status=PaymentStatus.SUCCEEDED, entry_id=entry.entry_id)))
    last = updates_last(connection)
    if not last:
        _update_balances(connection, plan)
    accounts.post_entries(connection, entries)
    records.insert_payments(connection, [record for _, record in plan.committed])
    ctx.executor.idempotency.record_many(
        connection,
        [(p.item.claim, record.payment_id, record.to_json(), record.created_at) for p, record in plan.committed],
    )
    if last:
        _update_balances(connection, plan)


def _update_balances(connection: Connection, plan: _Plan) -> None:
    """One update per account, in account-id order as every transaction of the ledger does (so no two can wait on
    each other in a cycle), sent as one executemany: on PostgreSQL one pipelined round trip."""
    ordered = sorted((plan.known[key].account_id, key) for key, delta in plan.deltas.items() if delta != 0)
    changes = [(plan.known[key], plan.deltas[key], plan.fences.get(key, 0)) for _, key in ordered]
    if not accounts.apply_changes(connection, changes):
        raise _Conflict("a balance update matched no row (a newer lock holder, or a balance moved meanwhile)")


def _phase(ctx: Context, phase: str, since: float) -> float:
    now = time.perf_counter()
    if ctx.metrics is not None:
        ctx.metrics.batch_phase_seconds.labels(KIND, phase).observe(now - since)
    return now


def _count(ctx: Context, outcome: str, amount: int = 1) -> None:
    if ctx.metrics is not None and amount:
        ctx.metrics.batch_outcomes.labels(KIND, outcome).inc(amount)
