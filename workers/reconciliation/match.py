"""Matching one provider day's statement against our records: a pure function (docs/reconciliation.md).

A record is known to the provider by its *reference*: the attempt id (out_trade_no) for a payment, our refund
number (out_refund_no) for a refund. Every reference the statement lists is compared with our record of it, and
every record of ours settled within the day that the statement does not list is missing at the channel:

- `missing_locally`: listed by the provider, not settled here (no such record, or settled far from that day);
- `missing_at_channel`: settled here within the day, absent from the statement;
- `amount_differs`: both settled, for different amounts (or currencies);
- `status_differs`: one side says the money moved, the other does not (ours failed/closed/pending, or the
  provider's line carries a status that is not a success);
- `duplicate_at_channel`: the same reference listed more than once.

The midnight rule: a record the statement lists but that we settled on the day before or after still matches —
our clock and the provider's put a payment made at 23:59:59 on either side of midnight. The reverse cannot be
decided from one statement, so a record settled here within a few minutes of the day's edge and missing from the
statement is still reported, with a hint to look at the neighbouring day.

`ours_minor` / `theirs_minor` of an item are what each side counts as *settled*: None when that side has no
settled record, so `theirs - ours` is always the money the provider holds beyond what our ledger says.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from workers.channels.base import NotificationKind, StatementLine

Reference = tuple[NotificationKind, str]

SETTLED = "succeeded"  # our status (attempts and refunds alike) for money that moved
# The providers' words for a line whose money moved, case-folded: Alipay (its own bill lists completed business
# only, so the business type stands in when there is no status column), WeChat Pay, UnionPay's respCode, card.
PROVIDER_SETTLED = frozenset(
    {"trade_success", "trade_finished", "refund_success", "交易", "退款", "payment", "refund"}
    | {"success", "00", "succeeded", "captured", "paid"}
)
ONE_DAY = timedelta(days=1)
NEAR_EDGE = timedelta(minutes=10)  # settled this close to midnight: the provider may list it on the other day


class ItemKind(enum.StrEnum):
    MISSING_LOCALLY = "missing_locally"
    MISSING_AT_CHANNEL = "missing_at_channel"
    AMOUNT_DIFFERS = "amount_differs"
    STATUS_DIFFERS = "status_differs"
    DUPLICATE_AT_CHANNEL = "duplicate_at_channel"


@dataclass(frozen=True)
class ProviderDay:
    """The provider's calendar day as an instant range [start, end), timezone-aware."""

    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def near(self, at: datetime) -> bool:
        """Within the day or the day before or after it (the midnight rule)."""
        return self.start - ONE_DAY <= at < self.end + ONE_DAY


@dataclass(frozen=True)
class Local:
    """Our record of a payment attempt or a refund through the channel."""

    kind: NotificationKind
    reference: str  # the attempt id (payments) or our out_refund_no (refunds)
    out_trade_no: str  # the attempt id; for a refund, the refunded payment's attempt ("" if unknown)
    amount_minor: int
    currency: str
    status: str  # ours: succeeded, pending, failed, closed, ...
    settled_at: datetime  # when it reached that status (updated_at)

    @property
    def settled(self) -> bool:
        return self.status == SETTLED

    @property
    def key(self) -> Reference:
        return (self.kind, self.reference)


@dataclass(frozen=True)
class Item:
    """One difference between the statement and our records."""

    kind: ItemKind
    record: NotificationKind  # payment or refund
    out_trade_no: str
    out_refund_no: str
    currency: str
    ours_minor: int | None  # what we count as settled; None: nothing
    theirs_minor: int | None  # what the provider counts as settled; None: nothing
    detail: str

    @property
    def reference(self) -> str:
        return self.out_refund_no if self.record is NotificationKind.REFUND else self.out_trade_no

    @property
    def difference_minor(self) -> int:
        """What the provider counts as settled beyond what we do (negative: less than we do)."""
        return (self.theirs_minor or 0) - (self.ours_minor or 0)


@dataclass(frozen=True)
class Outcome:
    lines: int  # statement lines read
    matched: int  # references the statement lists that agree with ours
    items: tuple[Item, ...]


def reference(line: StatementLine) -> Reference:
    if line.kind is NotificationKind.REFUND:
        return (NotificationKind.REFUND, line.out_refund_no)
    return (NotificationKind.PAYMENT, line.out_trade_no)


def provider_settled(line: StatementLine) -> bool:
    return line.status.strip().casefold() in PROVIDER_SETTLED


def match(lines: Sequence[StatementLine], ours: Iterable[Local], day: ProviderDay) -> Outcome:
    """Compare a day's statement with our records: those settled within `day`, plus any record (any status, any
    day) that the statement names. Items come in statement order, then our records missing at the channel."""
    listed: dict[Reference, list[StatementLine]] = {}
    for line in lines:
        listed.setdefault(reference(line), []).append(line)
    records = {local.key: local for local in ours}
    items: list[Item] = []
    matched = 0
    for key, group in listed.items():
        item = _compare(group, records.get(key), day)
        if item is None:
            matched += 1
        else:
            items.append(item)
    absent = [r for key, r in records.items() if key not in listed and r.settled and day.contains(r.settled_at)]
    items.extend(_missing_at_channel(local, day) for local in sorted(absent, key=lambda r: r.settled_at))
    return Outcome(lines=len(lines), matched=matched, items=tuple(items))


def _compare(group: Sequence[StatementLine], local: Local | None, day: ProviderDay) -> Item | None:
    first = group[0]
    settled_lines = [line for line in group if provider_settled(line)]
    theirs = sum(line.amount_minor for line in settled_lines) if settled_lines else None
    ours = local.amount_minor if local is not None and local.settled else None

    def item(kind: ItemKind, detail: str) -> Item:
        return Item(
            kind=kind,
            record=first.kind,
            out_trade_no=first.out_trade_no or (local.out_trade_no if local else ""),
            out_refund_no=first.out_refund_no,
            currency=first.currency or (local.currency if local else ""),
            ours_minor=ours,
            theirs_minor=theirs,
            detail=detail,
        )

    if len(group) > 1:
        words = ", ".join(f"{line.amount_minor} {line.status}" for line in group)
        return item(ItemKind.DUPLICATE_AT_CHANNEL, f"listed {len(group)} times: {words}")
    said = f"{first.amount_minor} {first.currency} as {first.status} at {first.at.isoformat()}"
    if local is None:
        return item(ItemKind.MISSING_LOCALLY, f"the provider lists {said}; no such {first.kind.value} here")
    if local.settled != provider_settled(first):
        return item(ItemKind.STATUS_DIFFERS, f"the provider lists {said}; ours is {local.status}")
    if not local.settled:
        return None  # both sides say no money moved
    if first.amount_minor != local.amount_minor or first.currency != local.currency:
        ours_said = f"{local.amount_minor} {local.currency}"
        return item(ItemKind.AMOUNT_DIFFERS, f"the provider lists {said}; ours is {ours_said}")
    if not day.near(local.settled_at):
        settled = local.settled_at.isoformat()
        return item(ItemKind.MISSING_LOCALLY, f"the provider lists {said}; settled here only at {settled}")
    return None


def _missing_at_channel(local: Local, day: ProviderDay) -> Item:
    detail = f"settled here at {local.settled_at.isoformat()} ({local.amount_minor} {local.currency}), not listed"
    if local.settled_at >= day.end - NEAR_EDGE:
        detail += "; near midnight: check the next day's statement"
    elif local.settled_at < day.start + NEAR_EDGE:
        detail += "; near midnight: check the previous day's statement"
    refund = local.kind is NotificationKind.REFUND
    return Item(
        kind=ItemKind.MISSING_AT_CHANNEL,
        record=local.kind,
        out_trade_no=local.out_trade_no,
        out_refund_no=local.reference if refund else "",
        currency=local.currency,
        ours_minor=local.amount_minor,
        theirs_minor=None,
        detail=detail,
    )
