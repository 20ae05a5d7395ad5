"""Decode and validate requests: protobuf in, a domain command out, or InvalidArgument naming every bad field.

Every field is checked before anything is read or written, so bad input changes nothing.
"""

from __future__ import annotations

import re

from paygate.errors import FieldViolation, InvalidArgument
from paygate.v1 import payment_gateway_pb2 as pb
from workers.currencies import minor_unit_exponent
from workers.domain import BalanceQuery, CreatePaymentCommand, Method, PaymentLookup, TopUpCommand

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ID_RULE = "must be 1-64 characters of [A-Za-z0-9_.:-]"
# 10^15 minor units (10 trillion CNY) per call keeps every sum of amounts far inside int64.
MAX_AMOUNT_MINOR = 10**15
MAX_DESCRIPTION_CHARS = 256

METHODS_BY_PROTO: dict[int, Method] = {
    pb.PAYMENT_METHOD_WALLET: Method.WALLET,
    pb.PAYMENT_METHOD_ALIPAY: Method.ALIPAY,
    pb.PAYMENT_METHOD_WECHAT_PAY: Method.WECHAT_PAY,
    pb.PAYMENT_METHOD_UNIONPAY: Method.UNIONPAY,
    pb.PAYMENT_METHOD_CARD: Method.CARD,
    pb.PAYMENT_METHOD_SANDBOX: Method.SANDBOX,
}


class Violations:
    """Collects every problem of one request so the caller can fix them all at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def identifier(self, field: str, value: str, *, required: bool = True) -> None:
        if not value:
            if required:
                self.add(field, f"is required; {ID_RULE}")
        elif not ID_PATTERN.match(value):
            self.add(field, ID_RULE)

    def amount(self, field: str, value: int) -> None:
        if value <= 0:
            self.add(field, f"must be a positive number of minor units, got {value}")
        elif value > MAX_AMOUNT_MINOR:
            self.add(field, f"must be at most {MAX_AMOUNT_MINOR} minor units, got {value}")

    def currency(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "is required: an ISO-4217 code such as CNY")
        elif minor_unit_exponent(value) is None:
            self.add(field, f"{value!r} is not a supported ISO-4217 currency code (upper case, e.g. CNY, USD)")

    def method(self, field: str, value: int) -> Method | None:
        method = METHODS_BY_PROTO.get(value)
        if method is None:
            self.add(field, "is required: one of WALLET, ALIPAY, WECHAT_PAY, UNIONPAY, CARD, SANDBOX")
        return method

    def text(self, field: str, value: str, max_chars: int) -> None:
        if len(value) > max_chars:
            self.add(field, f"must be at most {max_chars} characters, got {len(value)}")
        elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            self.add(field, "must not contain control characters")

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def top_up(request: pb.TopUpRequest) -> TopUpCommand:
    v = Violations()
    v.identifier("order_id", request.order_id)
    v.identifier("user_id", request.user_id)
    v.amount("amount_minor", request.amount_minor)
    v.currency("currency", request.currency)
    method = v.method("method", request.method)
    if method is Method.WALLET:
        v.add("method", "WALLET is not a top-up source: money comes in from a channel (e.g. SANDBOX, ALIPAY)")
    v.raise_if_any()
    assert method is not None
    return TopUpCommand(request.order_id, request.user_id, request.amount_minor, request.currency, method)


def create_payment(request: pb.CreatePaymentRequest) -> CreatePaymentCommand:
    v = Violations()
    v.identifier("order_id", request.order_id)
    v.identifier("user_id", request.user_id)
    v.amount("amount_minor", request.amount_minor)
    v.currency("currency", request.currency)
    method = v.method("method", request.method)
    v.identifier("payee_id", request.payee_id, required=False)
    v.text("description", request.description, MAX_DESCRIPTION_CHARS)
    v.raise_if_any()
    assert method is not None
    return CreatePaymentCommand(
        order_id=request.order_id,
        user_id=request.user_id,
        amount_minor=request.amount_minor,
        currency=request.currency,
        method=method,
        payee_id=request.payee_id,
        description=request.description,
    )


def get_payment(request: pb.GetPaymentRequest) -> PaymentLookup:
    v = Violations()
    if bool(request.payment_id) == bool(request.order_id):
        v.add("payment_id", "set exactly one of payment_id or order_id")
    else:
        v.identifier("payment_id", request.payment_id, required=False)
        v.identifier("order_id", request.order_id, required=False)
    v.raise_if_any()
    return PaymentLookup(payment_id=request.payment_id, order_id=request.order_id)


def get_balance(request: pb.GetBalanceRequest) -> BalanceQuery:
    v = Violations()
    v.identifier("user_id", request.user_id)
    v.currency("currency", request.currency)
    v.raise_if_any()
    return BalanceQuery(user_id=request.user_id, currency=request.currency)
