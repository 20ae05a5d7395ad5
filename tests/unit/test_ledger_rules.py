"""Pure rules of the ledger: balanced entries and which accounts may go negative."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from runtime.ids import new_id
from workers.domain.types import AccountKind, Method, PaymentRecord, PaymentStatus, PaymentType
from workers.ledger.accounts import LedgerInvariantError, Posting, check_balanced


def test_a_balanced_entry_passes() -> None:
    check_balanced([Posting(1, -500, "CNY"), Posting(2, 400, "CNY"), Posting(3, 100, "CNY")])


@pytest.mark.parametrize(
    "postings",
    [
        [Posting(1, -500, "CNY"), Posting(2, 499, "CNY")],
        [Posting(1, -500, "CNY"), Posting(2, 500, "USD")],
        [Posting(1, 0, "CNY"), Posting(2, 0, "CNY")],
        [Posting(1, 0, "CNY")],
    ],
)
def test_unbalanced_or_empty_entries_are_refused(postings: list[Posting]) -> None:
    with pytest.raises(LedgerInvariantError):
        check_balanced(postings)


def test_wallets_payables_and_refunds_in_transit_must_stay_non_negative() -> None:
    # Revenue may go negative (a refund after a payout), clearing and suspense hold differences either way.
    assert {k for k in AccountKind if k.non_negative} == {
        AccountKind.WALLET,
        AccountKind.PAYABLE,
        AccountKind.IN_TRANSIT,
    }


def test_ids_sort_by_creation_time() -> None:
    ids = [new_id("pay") for _ in range(200)]
    assert all(i.startswith("pay_") and len(i) == 30 for i in ids)
    assert len(set(ids)) == 200
    # Same-millisecond ids are random in their tail, so compare across a clock tick.
    first = new_id("x")
    time.sleep(0.002)
    assert new_id("x") > first


def test_an_id_is_the_clock_and_random_bits_in_crockford_base32() -> None:
    before_ms = time.time_ns() // 1_000_000
    value_digits = new_id("pay")[4:]
    after_ms = time.time_ns() // 1_000_000
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    value = 0
    for digit in value_digits:
        value = value * 32 + alphabet.index(digit)
    assert before_ms <= value >> 80 <= after_ms  # the 48-bit ms clock leads, so ids sort by time
    assert value < 2**128


def test_payment_record_json_round_trip() -> None:
    now = datetime.now(UTC)
    record = PaymentRecord(
        payment_id="pay_1",
        owner="svc",
        order_id="o",
        payment_type=PaymentType.PURCHASE,
        user_id="u",
        payee_id="c",
        amount_minor=5,
        currency="CNY",
        method=Method.WALLET,
        status=PaymentStatus.SUCCEEDED,
        refunded_minor=0,
        failure_reason="",
        description="d",
        entry_id="je_1",
        created_at=now,
        updated_at=now,
    )
    assert PaymentRecord.from_json(record.to_json()) == record
