"""The issue-3 operations over the wire: prices, priced purchases with their split, history paging, and
idempotency that survives a restart of the whole stack."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import start_stack


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_quote_price_the_issue_example(client: PaygateClient) -> None:
    quote = client.quote_price(
        pb.QuotePriceRequest(list_price_minor=10_000, discount_rate="0.10", tax_rate="0.05", currency="CNY")
    )
    assert (quote.amount_minor, quote.discount_minor, quote.tax_minor) == (9_450, 1_000, 450)


@pytest.mark.parametrize(
    ("discount", "tax", "field"),
    [
        ("1", "0", "discount_rate"),
        ("0.1234567", "0", "discount_rate"),
        ("-0.1", "0", "discount_rate"),
        ("0", "1.5", "tax_rate"),
        ("0", "abc", "tax_rate"),
    ],
)
def test_bad_rates_name_their_field(client: PaygateClient, discount: str, tax: str, field: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        client.quote_price(
            pb.QuotePriceRequest(list_price_minor=100, discount_rate=discount, tax_rate=tax, currency="CNY")
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)
    bad_request = error_details_pb2.BadRequest()
    assert status is not None and any(d.Unpack(bad_request) for d in status.details)
    assert [v.field for v in bad_request.field_violations] == [field]


def test_a_priced_purchase_records_its_breakdown_and_split(client: PaygateClient) -> None:
    user, creator = uid("u"), uid("c")
    client.top_up(
        pb.TopUpRequest(
            order_id=uid("t"), user_id=user, amount_minor=20_000, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    payment = client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("o"),
            user_id=user,
            currency="CNY",
            method=pb.PAYMENT_METHOD_WALLET,
            payee_id=creator,
            price=pb.PriceInputs(list_price_minor=10_000, discount_rate="0.10", tax_rate="0.05"),
        )
    )
    assert payment.amount_minor == 9_450
    assert (payment.list_price_minor, payment.discount_minor, payment.tax_minor) == (10_000, 1_000, 450)
    assert payment.creator_amount_minor + payment.platform_fee_minor == 9_450
    assert payment.platform_fee_minor == 9_450 * 2_000 // 10_000
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 10_550
    with pytest.raises(grpc.RpcError) as error:
        client.create_payment(
            pb.CreatePaymentRequest(
                order_id=uid("o"),
                user_id=user,
                amount_minor=5,
                currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET,
                price=pb.PriceInputs(list_price_minor=10),
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in error.value.details()


def test_history_pages_newest_first(client: PaygateClient) -> None:
    user = uid("u")
    for amount in range(1, 6):
        client.top_up(
            pb.TopUpRequest(
                order_id=uid("t"), user_id=user, amount_minor=amount, currency="USD", method=pb.PAYMENT_METHOD_SANDBOX
            )
        )
    seen: list[int] = []
    token = ""
    for _ in range(10):  # bounded: 5 postings in pages of 2
        page = client.list_transactions(pb.ListTransactionsRequest(user_id=user, page_size=2, page_token=token))
        seen.extend(t.amount_minor for t in page.transactions)
        assert all(
            t.kind == "top_up" and t.currency == "USD" and t.reference_id.startswith("pay_") for t in page.transactions
        )
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    everything = client.list_transactions(pb.ListTransactionsRequest(user_id=user, page_size=100_000))
    assert len(everything.transactions) == 5 and everything.next_page_token == ""
    for bad in (
        pb.ListTransactionsRequest(user_id=user, page_token="not-a-token"),
        pb.ListTransactionsRequest(user_id=user, page_size=-1),
    ):
        with pytest.raises(grpc.RpcError) as error:
            client.list_transactions(bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_idempotency_survives_a_restart_of_the_stack(tmp_path: Path) -> None:
    data_dir = tmp_path / "restart"
    first_stack = start_stack(data_dir, workers=2)
    key_id, secret = first_stack.create_key("restart")
    request = pb.TopUpRequest(
        order_id="survives", user_id="u-restart", amount_minor=123, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    )
    with first_stack.client(key_id, secret) as client:
        original = client.top_up(request)
    assert first_stack.stop() == 0
    second_stack = start_stack(data_dir, workers=2)  # same data dir: same SQLite file, a new Redis
    try:
        with second_stack.client(key_id, secret) as client:
            assert client.top_up(request) == original
            changed = pb.TopUpRequest()
            changed.CopyFrom(request)
            changed.amount_minor = 124
            with pytest.raises(grpc.RpcError) as error:
                client.top_up(changed)
            assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert client.get_balance(pb.GetBalanceRequest(user_id="u-restart", currency="CNY")).available_minor == 123
    finally:
        assert second_stack.stop() == 0
