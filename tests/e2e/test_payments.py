"""Signed calls through the real gateway to real workers: the issue's working RPCs."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygate import signing
from paygate.client import PaygateClient, SigningInterceptor
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from paygate.v1 import payment_gateway_pb2_grpc as pb_grpc


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_top_up_purchase_get_and_balance(client: PaygateClient) -> None:
    user, creator, order = uid("u"), uid("c"), uid("o")
    topped = client.top_up(
        pb.TopUpRequest(
            order_id=uid("o"), user_id=user, amount_minor=10_000, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    assert topped.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert topped.type == pb.PAYMENT_TYPE_TOP_UP
    paid = client.create_payment(
        pb.CreatePaymentRequest(
            order_id=order,
            user_id=user,
            amount_minor=4_990,
            currency="CNY",
            method=pb.PAYMENT_METHOD_WALLET,
            payee_id=creator,
            description="Algorithms, part I",
        )
    )
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert (paid.amount_minor, paid.payee_id, paid.method) == (4_990, creator, pb.PAYMENT_METHOD_WALLET)
    assert paid.payment_id.startswith("pay_") and paid.entry_id.startswith("je_")
    by_id = client.get_payment(pb.GetPaymentRequest(payment_id=paid.payment_id))
    by_order = client.get_payment(pb.GetPaymentRequest(order_id=order))
    assert by_id == by_order == paid
    balance = client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY"))
    assert balance.available_minor == 5_010


def test_retrying_the_same_order_charges_once(client: PaygateClient) -> None:
    user = uid("u")
    client.top_up(
        pb.TopUpRequest(
            order_id=uid("o"), user_id=user, amount_minor=500, currency="USD", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    request = pb.CreatePaymentRequest(
        order_id=uid("o"), user_id=user, amount_minor=200, currency="USD", method=pb.PAYMENT_METHOD_WALLET
    )
    first = client.create_payment(request)
    # The retry lands on a different worker (round-robin) and still gets the original result.
    second = client.create_payment(request)
    assert second == first
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="USD")).available_minor == 300
    changed = pb.CreatePaymentRequest()
    changed.CopyFrom(request)
    changed.amount_minor = 201
    with pytest.raises(grpc.RpcError) as error:
        client.create_payment(changed)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_bad_input_is_invalid_argument_with_field_violations_and_changes_nothing(client: PaygateClient) -> None:
    user = uid("u")
    with pytest.raises(grpc.RpcError) as error:
        client.top_up(
            pb.TopUpRequest(
                order_id="bad id!", user_id=user, amount_minor=-5, currency="XXX", method=pb.PAYMENT_METHOD_WALLET
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert {v.field for v in bad_request.field_violations} == {"order_id", "amount_minor", "currency", "method"}
    assert "Traceback" not in error.value.details()
    # Nothing moved, and the server keeps serving.
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 0


def test_insufficient_funds_is_failed_precondition(client: PaygateClient) -> None:
    user = uid("u")
    client.top_up(
        pb.TopUpRequest(
            order_id=uid("o"), user_id=user, amount_minor=99, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    with pytest.raises(grpc.RpcError) as error:
        client.create_payment(
            pb.CreatePaymentRequest(
                order_id=uid("o"), user_id=user, amount_minor=100, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
            )
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    status = rpc_status.from_call(error.value)
    assert status is not None and any(d.Unpack(info) for d in status.details)
    assert info.reason == "INSUFFICIENT_FUNDS"
    assert client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY")).available_minor == 99


def test_unknown_payment_is_not_found(client: PaygateClient) -> None:
    with pytest.raises(grpc.RpcError) as error:
        client.get_payment(pb.GetPaymentRequest(payment_id="pay_00000000000000000000000000"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_responses_carry_worker_and_request_id(client: PaygateClient) -> None:
    result = client.call(
        "GetBalance", pb.GetBalanceRequest(user_id="u-meta", currency="CNY"), pb.Balance, request_id="trace-abc-123"
    )
    assert result.worker is not None and result.worker.startswith("worker-")
    assert result.request_id == "trace-abc-123"
    generated = client.call("GetBalance", pb.GetBalanceRequest(user_id="u-meta", currency="CNY"), pb.Balance)
    assert generated.request_id and generated.request_id.startswith("req_")


def test_errors_carry_worker_and_request_id(client: PaygateClient) -> None:
    with pytest.raises(grpc.RpcError) as error:
        client.call(
            "GetBalance", pb.GetBalanceRequest(user_id="", currency="CNY"), pb.Balance, request_id="trace-err-1"
        )
    trailers = dict(error.value.trailing_metadata())
    assert trailers["x-request-id"] == "trace-err-1"
    assert trailers["x-paygate-worker"].startswith("worker-")


def test_generated_stubs_work_through_the_signing_interceptor(stack, credentials) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    with stack.channel() as channel:
        stub = pb_grpc.PaymentGatewayStub(grpc.intercept_channel(channel, SigningInterceptor(key_id, secret)))
        balance = stub.GetBalance(pb.GetBalanceRequest(user_id="u-stub", currency="CNY"), timeout=10)
    assert balance.available_minor == 0 and balance.user_id == "u-stub"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff\xff\xff", "not a valid paygate.v1.GetBalanceRequest"),
        (b"\x0a\x05ab", "not a valid paygate.v1.GetBalanceRequest"),
        (b"\x08" + b"\x80" * 11, "not a valid paygate.v1.GetBalanceRequest"),
        (b"\x12\x02\xc3\x28", "currency: must be valid UTF-8"),  # the field with bad text is named
    ],
    ids=["garbage", "truncated", "overlong-varint", "bad-utf8"],
)
def test_a_signed_body_that_is_not_a_message_is_invalid_argument(
    stack, credentials, body: bytes, expected: str
) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = credentials
    path = method_path("GetBalance")
    with stack.channel() as channel, pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(path)(body, metadata=signing.signed_metadata(key_id, secret, path, body), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details()
