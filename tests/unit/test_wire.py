"""Request bytes that are not a valid message: INVALID_ARGUMENT, naming the field when its text is bad UTF-8."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.scopes import METHOD_SCOPES
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.errors import InvalidArgument
from workers.codec import wire

REQUEST_TYPES = [pb.DESCRIPTOR.services_by_name["PaymentGateway"].methods_by_name[m].input_type for m in METHOD_SCOPES]


def _fields(body: bytes) -> list[str]:
    with pytest.raises(InvalidArgument) as error:
        wire.parse(pb.CreatePaymentRequest, body)
    return [v.field for v in error.value.violations]


def test_bad_utf8_names_the_field_top_level_and_nested() -> None:
    good = pb.CreatePaymentRequest(order_id="abc", description="x", price=pb.PriceInputs(tax_rate="y"))
    body = good.SerializeToString()
    assert _fields(body.replace(b"x", b"\xed\xa0\x80")) == ["description"]  # an encoded lone surrogate
    assert _fields(body.replace(b"y", b"\xff")) == ["price.tax_rate"]
    assert _fields(body.replace(b"abc", b"a\xc3(")) == ["order_id"]


def test_corrupt_bytes_are_refused_as_a_whole() -> None:
    assert _fields(b"\xff\xff\xff") == ["request"]


def test_a_valid_body_parses_unchanged() -> None:
    request = pb.CreatePaymentRequest(order_id="o-1", description="数据结构")
    assert wire.parse(pb.CreatePaymentRequest, request.SerializeToString()) == request


@given(body=st.binary(max_size=200), index=st.integers(min_value=0, max_value=len(REQUEST_TYPES) - 1))
def test_any_bytes_parse_or_raise_invalid_argument(body: bytes, index: int) -> None:
    request_type = pb.DESCRIPTOR.message_types_by_name[REQUEST_TYPES[index].name]
    message_class = getattr(pb, request_type.name)
    try:
        wire.parse(message_class, body)
    except InvalidArgument as error:
        assert error.violations
