"""Hostile input through the whole path: whatever the bytes or fields, the answer is a deliberate status, never
UNKNOWN or INTERNAL, no money moves unless the call succeeded, and the stack keeps serving."""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygate import signing
from paygate.client import PaygateClient
from paygate.scopes import METHOD_SCOPES, method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def send(stack: Stack, credentials: tuple[str, str], method: str, body: bytes) -> grpc.StatusCode:
    path = method_path(method)
    with grpc.insecure_channel(stack.listen) as channel:
        try:
            channel.unary_unary(path)(body, metadata=signing.signed_metadata(*credentials, path, body), timeout=10)
        except grpc.RpcError as error:
            assert "Traceback" not in (error.details() or "")
            return error.code()
    return grpc.StatusCode.OK


@FUZZ
@given(method=st.sampled_from(sorted(METHOD_SCOPES)), body=st.binary(max_size=300))
def test_random_signed_bytes_get_a_deliberate_status(
    stack: Stack, credentials: tuple[str, str], method: str, body: bytes
) -> None:
    assert send(stack, credentials, method, body) in DELIBERATE


@FUZZ
@given(
    order_id=st.text(max_size=80),
    user_id=st.text(max_size=80),
    amount_minor=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    currency=st.text(max_size=5),
    method=st.integers(min_value=-5, max_value=20),
    payee_id=st.text(max_size=80),
    description=st.text(max_size=300),
)
def test_random_purchase_fields_never_overdraw_or_crash(  # type: ignore[no-untyped-def]
    stack: Stack,
    credentials: tuple[str, str],
    client: PaygateClient,
    order_id,
    user_id,
    amount_minor,
    currency,
    method,
    payee_id,
    description,
) -> None:
    request = pb.CreatePaymentRequest(
        order_id=order_id,
        user_id=user_id,
        amount_minor=amount_minor,
        currency=currency,
        method=method,
        payee_id=payee_id,
        description=description,
    )
    code = send(stack, credentials, "CreatePayment", request.SerializeToString())
    assert code in DELIBERATE
    if code != grpc.StatusCode.OK and code != grpc.StatusCode.INVALID_ARGUMENT and user_id:
        # Refused for a business reason: the wallet, if it exists, is untouched and never negative.
        balance = client.get_balance(pb.GetBalanceRequest(user_id=user_id, currency=currency))
        assert balance.available_minor >= 0


def test_the_stack_still_serves_after_the_fuzzing(client: PaygateClient) -> None:
    assert client.get_balance(pb.GetBalanceRequest(user_id="after-fuzz", currency="CNY")).available_minor == 0
