"""The gateway's user scan of request bytes (gateway/wire_scan.py) and the parsing of a key's limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.key_limits import KeyLimits, effective, parse_changes, parse_rate
from gateway.wire_scan import MAX_USER_BYTES, USER_FIELD_BY_PATH, string_field, user_of
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.settings import Settings

users = st.text(min_size=1, max_size=MAX_USER_BYTES // 4)


def test_user_fields_come_from_the_descriptors() -> None:
    assert {
        method_path("TopUp"): pb.TopUpRequest.DESCRIPTOR.fields_by_name["user_id"].number,
        method_path("CreatePayment"): pb.CreatePaymentRequest.DESCRIPTOR.fields_by_name["user_id"].number,
        method_path("GetBalance"): pb.GetBalanceRequest.DESCRIPTOR.fields_by_name["user_id"].number,
        method_path("ListTransactions"): pb.ListTransactionsRequest.DESCRIPTOR.fields_by_name["user_id"].number,
        method_path("Transfer"): pb.TransferRequest.DESCRIPTOR.fields_by_name["from_user_id"].number,
    } == USER_FIELD_BY_PATH


@given(user=users, order=st.text(max_size=80), amount=st.integers(-(2**63), 2**63 - 1), description=st.text())
def test_the_user_of_a_real_message_is_found(user: str, order: str, amount: int, description: str) -> None:
    request = pb.CreatePaymentRequest(
        order_id=order,
        user_id=user,
        amount_minor=amount,
        description=description,
        price=pb.PriceInputs(list_price_minor=amount),
    )
    assert user_of(method_path("CreatePayment"), request.SerializeToString()) == user.encode()


@given(payer=users, payee=users)
def test_a_transfer_names_its_payer(payer: str, payee: str) -> None:
    body = pb.TransferRequest(transfer_id="t", from_user_id=payer, to_user_id=payee, amount_minor=5).SerializeToString()
    assert user_of(method_path("Transfer"), body) == payer.encode()


@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_and_agree_with_the_parser(body: bytes) -> None:
    found = user_of(method_path("GetBalance"), body)
    try:
        parsed = pb.GetBalanceRequest.FromString(body)
    except Exception:
        return
    if found is not None:
        assert found == parsed.user_id.encode()


def test_what_names_no_user() -> None:
    balance = method_path("GetBalance")
    assert user_of(method_path("QuotePrice"), pb.QuotePriceRequest(currency="CNY").SerializeToString()) is None
    assert user_of(balance, b"") is None  # absent
    assert user_of(balance, pb.GetBalanceRequest(user_id="x" * (MAX_USER_BYTES + 1)).SerializeToString()) is None
    assert user_of(balance, b"\x0a\x05ab") is None  # truncated
    assert user_of(balance, b"\x08\x01") is None  # field 1 as a varint: the wrong wire type
    assert user_of(balance, b"\x0b") is None  # a group
    assert user_of(balance, b"\x0a\x01a\x0a\x01b") == b"b"  # the last one wins, as protobuf says
    assert string_field(b"\x12\x01a", 1) is None


@pytest.mark.parametrize(
    ("text", "per_s"), [("50/s", 50.0), ("50", 50.0), ("300/min", 5.0), ("3600/h", 1.0), ("off", 0.0), ("1.5/s", 1.5)]
)
def test_rates(text: str, per_s: float) -> None:
    assert parse_rate(text, "--rate") == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["", "fast", "-1/s", "0", "5/day", "1e9", "2000000/s", "nan"])
def test_bad_rates_name_the_flag(text: str) -> None:
    with pytest.raises(ValueError, match="--rate"):
        parse_rate(text, "--rate")


def test_changes_and_defaults() -> None:
    changes = parse_changes(rate="10/s", burst=None, user_rate="default", user_burst=None, max_concurrent="off")
    assert changes == {"rate_per_s": 10.0, "user_rate_per_s": None, "max_concurrent_calls": 0}
    settings = Settings()
    applied = effective(KeyLimits(rate_per_s=10.0, max_concurrent_calls=0), settings)
    assert applied.burst == 20  # a rate of its own without a burst: two seconds' worth
    assert applied.user_rate_per_s == settings.default_user_rate_per_s
    assert applied.user_burst == settings.default_user_burst
    assert applied.max_concurrent_calls == 0
