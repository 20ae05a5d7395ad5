"""Seed a large, valid ledger straight into a stack's database, for scale tests: `paygate ledger seed`.

    paygate ledger seed --postings 1000000 [--accounts 100000] [--owner seed] [--prefix seed] [--data-dir DIR]
    PAYGATE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/paygate paygate ledger seed --postings 1000000

The command refuses to run in production mode: the rows are made up. It seeds the settings' database
(`PAYGATE_DATABASE_URL`, else the data dir's SQLite file) and prints one JSON object (`SeedReport`).

Writes the accounts (half learners' wallets `<prefix>-u…`, half creators' payables `<prefix>-c…`; the platform's
revenue and the SANDBOX clearing account if missing), then exactly `postings` postings as the services write them
(docs/ledger.md, "Accounts and entries"), over the 30 days before now, `created_at` rising with the posting ids:
SANDBOX top-ups (clearing -a, wallet +a) and wallet purchases (wallet -a, revenue +fee, payable +a - fee at the
default 2000 bps), each with its SUCCEEDED payment and idempotency record (what a retry is answered from). Wallets
are topped up before they pay (no running balance below zero); a few wallets and creators are far busier than the
rest (histories thousands of postings deep). `paygate ledger verify` passes.

It writes the owned tables (payments) itself, not through workers/store/: these are seed rows of one owner, not
a caller's lookups, and tests/unit/test_owner_scoping_layout.py lists this module as the one writer allowed so.

Core executemany in chunks of about 10,000 rows; one transaction (through the writer gate) per slice of about
250,000 postings that also adds the slice's sums to the balances it moved, so every committed slice leaves a ledger
that verifies (an interrupted seed leaves a smaller valid one). On SQLite the seed's own connections run
`synchronous = NORMAL` with a 256 MiB page cache, not FULL (docs/ledger.md, "An OK is durable"): a crash during the
seed can lose its last slices, never corrupt the file. Ids cannot collide with the stack's: payment and entry ids
come from `runtime.ids.new_id`, subjects and order ids carry the prefix, and a used prefix is refused before
anything is written. The schema is brought to the newest revision first (`runtime.db.upgrade`, idempotent).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import time
from collections import defaultdict, deque, namedtuple
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, event, update

from runtime.db import Database, upgrade
from runtime.ids import new_id
from runtime.schema import accounts, idempotency_records, journal_entries, payments, postings
from runtime.settings import Settings
from workers.domain.pricing import split_fee
from workers.domain.types import (
    PLATFORM_SUBJECT,
    AccountKind,
    CreatePaymentCommand,
    Method,
    PaymentRecord,
    TopUpCommand,
    request_hash,
)
from workers.ledger import accounts as ledger
from workers.operations.context import ORDER_SCOPE

Progress = Callable[[str, int, int], None]  # (stage, done, total)

CURRENCY = "CNY"
PLATFORM_FEE_BPS = Settings.platform_fee_bps  # the default split (workers/domain/pricing.py)
RETENTION = timedelta(seconds=Settings.idempotency_retention_s)
SPAN = timedelta(days=30)
TOP_UPS = (5_000, 10_000, 20_000, 50_000, 100_000)
PRICES = (990, 1_990, 2_990, 4_990, 9_990, 19_990, 29_900)
DESCRIPTION = "course"
LAG = 1_000  # a round's purchases come up to this many top-ups after it (never after the wallet's next top-up)
CHUNK_EVENTS = 4_000  # about 10,000 postings per executemany
SLICE_POSTINGS = 250_000  # one transaction
LOOKUP_CHUNK = 5_000
TOP_UP, PURCHASE = 0, 1
_PREFIX = re.compile(r"[A-Za-z0-9]{1,24}")
_ADD = (
    update(accounts)
    .where(accounts.c.account_id == bindparam("target_id"))
    .values(balance_minor=accounts.c.balance_minor + bindparam("delta"))
)
# The attempt fields a wallet or sandbox payment's stored response carries empty (workers/domain/types.py).
_NO_ATTEMPT = {"attempt_id": None, "scene": "", "pay_url": "", "qr_code": "", "prepay_id": "", "channel_trade_no": ""}
# What a wallet payment leaves at its default (card, risk review, ...): taken from the record itself, so a field
# added to PaymentRecord with a default needs nothing here; one without a default still fails the check below.
_RECORD_DEFAULTS = {f.name: f.default for f in fields(PaymentRecord) if f.default is not MISSING}


@dataclass(frozen=True)
class SeedReport:
    database: str
    owner: str
    prefix: str
    rows: dict[str, int]
    seconds: float
    shape: dict[str, int]  # wallets, creators, top_ups, purchases

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


Shape = namedtuple("Shape", "wallets creators top_ups purchases")


def shape(postings_wanted: int, accounts_wanted: int) -> Shape:
    """Exactly `postings_wanted` postings as 2 x top-ups + 3 x purchases, about two purchases per top-up."""
    wallets = accounts_wanted // 2
    creators = accounts_wanted - wallets
    purchases = postings_wanted // 4
    if (postings_wanted - 3 * purchases) % 2:
        purchases -= 1
    top_ups = (postings_wanted - 3 * purchases) // 2
    if wallets < 1 or top_ups < wallets or purchases < creators:
        raise ValueError(
            f"{postings_wanted} postings cannot give {accounts_wanted} accounts a movement each: every wallet needs "
            "a top-up and every creator a sale (use at least 2 accounts and about 8 postings per account)"
        )
    return Shape(wallets, creators, top_ups, purchases)


# An event: (TOP_UP, wallet, amount, -1) or (PURCHASE, wallet, amount, creator); indexes, not ids.
Event = tuple[int, int, int, int]


def events(rng: random.Random, plan: Shape) -> list[Event]:
    """Every movement in time order. Each wallet gets a top-up at least, each creator a sale at least; beyond
    that both are skewed (a few very busy ones). A round is one top-up and the purchases it pays for, which come
    later, interleaved with other wallets' rounds, but always before the same wallet's next top-up."""
    rounds = [*range(plan.wallets), *(_skewed(rng, plan.wallets) for _ in range(plan.top_ups - plan.wallets))]
    rng.shuffle(rounds)
    payees = [*range(plan.creators), *(_skewed(rng, plan.creators) for _ in range(plan.purchases - plan.creators))]
    rng.shuffle(payees)
    extra = plan.purchases % plan.top_ups
    buys_per_round = [plan.purchases // plan.top_ups + (1 if r < extra else 0) for r in range(plan.top_ups)]
    rng.shuffle(buys_per_round)
    out: list[Event] = []
    open_rounds: dict[int, list[Event]] = {}
    waiting: deque[int] = deque()
    sold = 0
    for wallet, buys in zip(rounds, buys_per_round, strict=True):
        out.extend(open_rounds.pop(wallet, ()))
        prices = [rng.choice(PRICES) for _ in range(buys)]
        out.append((TOP_UP, wallet, max(rng.choice(TOP_UPS), sum(prices)), -1))
        open_rounds[wallet] = [(PURCHASE, wallet, price, payees[sold + i]) for i, price in enumerate(prices)]
        sold += buys
        waiting.append(wallet)
        if len(waiting) > LAG:
            out.extend(open_rounds.pop(waiting.popleft(), ()))
    for wallet in waiting:
        out.extend(open_rounds.pop(wallet, ()))
    return out


def _skewed(rng: random.Random, n: int) -> int:
    return int(n * rng.random() ** 3)


@dataclass
class Ledger:
    """What the rows need: account ids by index, the run's names, and the balance sums of the open slice."""

    owner: str
    prefix: str
    wallet_ids: list[int]
    creator_ids: list[int]
    wallet_subjects: list[str]
    creator_subjects: list[str]
    revenue_id: int
    clearing_id: int
    start: datetime
    step_s: float
    deltas: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    checked: set[int] = field(default_factory=set)


def subjects(prefix: str, letter: str, count: int) -> list[str]:
    width = len(str(max(count - 1, 0)))
    return [f"{prefix}-{letter}{i:0{width}d}" for i in range(count)]


def create_accounts(database: Database, owner: str, prefix: str, plan: Shape, start: datetime) -> tuple[Ledger, int]:
    """One transaction: the system accounts if missing, and every seeded account at zero; refuses a used prefix."""
    wallet_subjects = subjects(prefix, "u", plan.wallets)
    creator_subjects = subjects(prefix, "c", plan.creators)
    with database.write() as connection:
        taken = _find(connection, AccountKind.WALLET, wallet_subjects)
        if taken or _find(connection, AccountKind.PAYABLE, creator_subjects):
            raise ValueError(f"prefix {prefix!r} was seeded before: its accounts exist; choose another --prefix")
        system = ((AccountKind.REVENUE, PLATFORM_SUBJECT), (AccountKind.CLEARING, Method.SANDBOX.value))
        created = sum(ledger.find_account(connection, kind, subject, CURRENCY) is None for kind, subject in system)
        revenue, clearing = (ledger.ensure_account(connection, k, s, CURRENCY, start) for k, s in system)
        for kind, names in ((AccountKind.WALLET, wallet_subjects), (AccountKind.PAYABLE, creator_subjects)):
            rows = [
                {"kind": kind.value, "subject": name, "currency": CURRENCY, "balance_minor": 0, "fence": 0}
                | {"non_negative": kind.non_negative, "created_at": start}
                for name in names
            ]
            for chunk in _chunks(rows, LOOKUP_CHUNK * 2):
                connection.execute(accounts.insert(), chunk)
        wallets = _find(connection, AccountKind.WALLET, wallet_subjects)
        creators = _find(connection, AccountKind.PAYABLE, creator_subjects)
    wallet_ids, creator_ids = [wallets[name] for name in wallet_subjects], [creators[name] for name in creator_subjects]
    state = Ledger(owner, prefix, wallet_ids, creator_ids, wallet_subjects, creator_subjects, 0, 0, start, 0.0)
    state.revenue_id, state.clearing_id = revenue.account_id, clearing.account_id
    return state, created + plan.wallets + plan.creators


def _find(connection: Connection, kind: AccountKind, names: list[str]) -> dict[str, int]:
    """Account ids by subject, through the services' own lookup (workers/ledger/accounts.py), in chunks."""
    found: dict[str, int] = {}
    for chunk in _chunks(names, LOOKUP_CHUNK):
        for (_kind, subject, _currency), account in ledger.find_accounts(
            connection, {(kind, n) for n in chunk}
        ).items():
            found[subject] = account.account_id
    return found


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


Rows = dict[str, list[dict[str, Any]]]  # by table name, in the order they are written (postings need entries)
TABLES = (journal_entries, postings, payments, idempotency_records)


def rows_of(state: Ledger, chunk: list[Event], first_index: int) -> Rows:
    """The rows of a run of events (`first_index` is the first one's place in time), with the balance sums."""
    rows: Rows = {table.name: [] for table in TABLES}
    for offset, (kind, wallet, amount, creator) in enumerate(chunk):
        index = first_index + offset
        now = state.start + timedelta(seconds=int(1 + index * state.step_s))
        payment, command = _payment_and_command(state, index, kind, wallet, amount, creator)
        payment.update(payment_id=new_id("pay"), entry_id=new_id("je"), created_at=now, updated_at=now)
        wallet_id, entry_id = state.wallet_ids[wallet], payment["entry_id"]
        if kind == TOP_UP:  # in the order the services post them (workers/operations/money.py)
            moves = [(state.clearing_id, -amount), (wallet_id, amount)]
        else:
            fee = payment["platform_fee_minor"]
            moves = [(wallet_id, -amount), (state.revenue_id, fee), (state.creator_ids[creator], amount - fee)]
        rows["payments"].append(payment)
        rows["journal_entries"].append(
            {"entry_id": entry_id, "kind": payment["payment_type"], "payment_id": payment["payment_id"]}
            | {"owner": state.owner, "created_at": now, "reference_id": payment["payment_id"]}
        )
        for account_id, moved in moves:
            rows["postings"].append(
                {"entry_id": entry_id, "account_id": account_id, "amount_minor": moved}
                | {"currency": CURRENCY, "created_at": now}
            )
            state.deltas[account_id] += moved
        rows["idempotency_records"].append(_record(state, payment, command, kind))
    return rows


def _payment_and_command(
    state: Ledger, index: int, kind: int, wallet: int, amount: int, creator: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payment row (without its ids and times) and the request as the gateway decodes it
    (workers/codec/decode.py: no price breakdown, so list price = amount), the empty fields left out as
    `request_hash` does."""
    user_id = state.wallet_subjects[wallet]
    order_id = f"{state.prefix}-{'t' if kind == TOP_UP else 'p'}{index:08d}"
    command: dict[str, Any] = {"order_id": order_id, "user_id": user_id, "amount_minor": amount, "currency": CURRENCY}
    payment: dict[str, Any] = command | {"owner": state.owner, "status": "succeeded", "refunded_minor": 0}
    payment.update(failure_reason="", list_price_minor=amount, discount_minor=0, tax_minor=0, attempt_id=None)
    if kind == TOP_UP:
        command.update(operation=TopUpCommand.operation, method=Method.SANDBOX.value)
        payment.update(payment_type="top_up", payee_id="", method=Method.SANDBOX.value, description="")
        payment.update(creator_amount_minor=0, platform_fee_minor=0)
        return payment, command
    creator_part, fee = split_fee(amount, PLATFORM_FEE_BPS)
    payee_id = state.creator_subjects[creator]
    command.update(operation=CreatePaymentCommand.operation, method=Method.WALLET.value, payee_id=payee_id)
    command.update(description=DESCRIPTION, list_price_minor=amount, discount_minor=0, tax_minor=0)
    command.update(discount_rate="", tax_rate="")
    payment.update(payment_type="purchase", payee_id=payee_id, method=Method.WALLET.value, description=DESCRIPTION)
    payment.update(creator_amount_minor=creator_part, platform_fee_minor=fee)
    return payment, command


def _record(state: Ledger, payment: dict[str, Any], command: dict[str, Any], kind: int) -> dict[str, Any]:
    """The idempotency record: what `request_hash` and `PaymentRecord.to_json` give, built without their
    dataclass round trips (60 µs a payment); the first row of each kind is checked against them."""
    now: datetime = payment["created_at"]
    moments = {"created_at": now.isoformat(), "updated_at": now.isoformat()}
    stored = {**_RECORD_DEFAULTS, **payment, **_NO_ATTEMPT, **moments}
    response = json.dumps(stored, sort_keys=True).encode()
    fingerprint = hashlib.sha256(json.dumps(command, sort_keys=True).encode()).hexdigest()
    if kind not in state.checked:
        _check_against_services(command, fingerprint, response)
        state.checked.add(kind)
    return {
        "owner": state.owner,
        "scope": ORDER_SCOPE,
        "idempotency_key": payment["order_id"],
        "request_hash": fingerprint,
        "resource_id": payment["payment_id"],
        "response": response,
        "created_at": now,
        "expires_at": now + RETENTION,
    }


def _check_against_services(command: dict[str, Any], fingerprint: str, response: bytes) -> None:
    values = {key: value for key, value in command.items() if key != "operation"}
    values["method"] = Method(values["method"])
    real = TopUpCommand(**values) if command["operation"] == TopUpCommand.operation else CreatePaymentCommand(**values)
    if request_hash(real) != fingerprint or PaymentRecord.from_json(response).to_json() != response:
        raise AssertionError("the seed's idempotency records no longer match the services' (workers/domain/types.py)")


def write_events(database: Database, state: Ledger, planned: list[Event], progress: Progress | None) -> dict[str, int]:
    """One transaction per slice: its rows in chunks, then the balance sums it moved."""
    counts = {"journal_entries": 0, "postings": 0, "payments": 0, "idempotency_records": 0}
    total = sum(2 if kind == TOP_UP else 3 for kind, *_ in planned)
    state.step_s = SPAN.total_seconds() / max(len(planned), 1)
    position = 0
    while position < len(planned):
        with database.write() as connection:
            in_slice = 0
            while position < len(planned) and in_slice < SLICE_POSTINGS:
                rows = rows_of(state, planned[position : position + CHUNK_EVENTS], position)
                position += min(CHUNK_EVENTS, len(planned) - position)
                for table in TABLES:
                    connection.execute(table.insert(), rows[table.name])
                    counts[table.name] += len(rows[table.name])
                in_slice += len(rows["postings"])
            _apply_deltas(connection, state)
        if progress is not None:
            progress("postings", counts["postings"], total)
    return counts


def _relax_sqlite(database: Database) -> None:
    """The seed's own SQLite connections only; runs after runtime/db.py's own set-up of each new connection (the
    safety level cannot change inside a transaction)."""
    if database.dialect != "sqlite":
        return

    @event.listens_for(database.writer, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA cache_size = -262144")  # 256 MiB of pages: the indexes of postings stay in memory
        cursor.close()


def _apply_deltas(connection: Connection, state: Ledger) -> None:
    moved = [{"target_id": account_id, "delta": delta} for account_id, delta in sorted(state.deltas.items()) if delta]
    for chunk in _chunks(moved, 10_000):
        connection.execute(_ADD, chunk)
    state.deltas.clear()


def seed(
    database_url: str,
    *,
    postings: int = 1_000_000,
    accounts: int = 100_000,
    owner: str = "seed",
    progress: Progress | None = None,
    prefix: str = "seed",
    rng_seed: int = 8,
) -> SeedReport:
    """Seed `postings` postings over `accounts` accounts of `owner` (see the module's docstring)."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("the prefix is 1 to 24 letters or digits (subjects and order ids start with it)")
    if not owner or len(owner) > 64:
        raise ValueError("the owner is 1 to 64 characters")
    plan = shape(postings, accounts)
    started = time.perf_counter()
    database = Database(database_url, pool_size=2)
    _relax_sqlite(database)
    try:
        upgrade(database)
        planned = events(random.Random(rng_seed), plan)
        start = datetime.now(UTC).replace(microsecond=0) - SPAN
        state, account_rows = create_accounts(database, owner, prefix, plan, start)
        counts = write_events(database, state, planned, progress)
    finally:
        database.dispose()
    seconds = round(time.perf_counter() - started, 1)
    return SeedReport(database.dialect, owner, prefix, {"accounts": account_rows, **counts}, seconds, plan._asdict())


def print_progress(stage: str, done: int, total: int) -> None:
    """The command's progress lines, on stderr (stdout carries the one JSON object)."""
    print(f"seed: {done:,} of {total:,} {stage}", file=sys.stderr, flush=True)
