"""The ledger checks of refunds through providers (docs/channels.md, "Refunds"), run by `paygate ledger verify`:
each channel's IN_TRANSIT account holds exactly the money of its PENDING refunds — no refund was settled or
reversed without moving its money out of transit, and none moved it twice."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, func, select

from runtime.schema import accounts, payments, refunds
from workers.domain.types import AccountKind, RefundStatus

MAX_EXAMPLES = 10


def in_transit_matches_pending_refunds(connection: Connection) -> list[str]:
    pending = (
        select(payments.c.method, refunds.c.currency, func.sum(refunds.c.amount_minor).label("total"))
        .select_from(refunds.join(payments, payments.c.payment_id == refunds.c.payment_id))
        .where(refunds.c.status == RefundStatus.PENDING.value, refunds.c.out_refund_no.is_not(None))
        .group_by(payments.c.method, refunds.c.currency)
    )
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for row in connection.execute(pending):
        expected[(row.method, row.currency)] = int(row.total)
    held = select(accounts.c.subject, accounts.c.currency, accounts.c.balance_minor).where(
        accounts.c.kind == AccountKind.IN_TRANSIT.value
    )
    actual = {(row.subject, row.currency): int(row.balance_minor) for row in connection.execute(held)}
    offenders = [
        f"in transit through {channel} ({currency}): {actual.get((channel, currency), 0)}, pending refunds "
        f"{expected.get((channel, currency), 0)}"
        for channel, currency in sorted(set(expected) | set(actual))
        if actual.get((channel, currency), 0) != expected.get((channel, currency), 0)
    ]
    return offenders[:MAX_EXAMPLES]
