"""Decode and validate requests: protobuf in, a domain command out, or InvalidArgument naming every bad field.

Every field is checked before anything is read or written, so bad input changes nothing.
"""

from __future__ import annotations

import base64
import re

from paygate.errors import FieldViolation, InvalidArgument
from paygate.v1 import payment_gateway_pb2 as pb
from workers.currencies import minor_unit_exponent
from workers.domain import (
    BalanceQuery,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    RefundCommand,
    TopUpCommand,
    TransactionsQuery,
    TransferCommand,
)
from workers.pricing import Quote, parse_rate, quote

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
PAGE_TOKEN_VERSION = "v1"  # noqa: S105 - a format tag, not a secret
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

    def price(self, prefix: str, list_price_minor: int, discount_rate: str, tax_rate: str) -> Quote | None:
        """Check price inputs (list price, rates with at most 6 places, discount in [0, 1), tax in [0, 1])."""
        name = (lambda field: f"{prefix}.{field}") if prefix else (lambda field: field)
        before = len(self.items)
        self.amount(name("list_price_minor"), list_price_minor)
        discount = parse_rate(discount_rate)
        if discount is None or discount >= 1:
            self.add(name("discount_rate"), f"must be a decimal in [0, 1) with at most 6 places, got {discount_rate!r}")
        tax = parse_rate(tax_rate)
        if tax is None or tax > 1:
            self.add(name("tax_rate"), f"must be a decimal in [0, 1] with at most 6 places, got {tax_rate!r}")
        if len(self.items) > before or discount is None or tax is None:
            return None
        return quote(list_price_minor, discount, tax)

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
    v.currency("currency", request.currency)
    method = v.method("method", request.method)
    v.identifier("payee_id", request.payee_id, required=False)
    v.text("description", request.description, MAX_DESCRIPTION_CHARS)
    quoted: Quote | None = None
    if request.HasField("price"):
        if request.amount_minor:
            v.add("amount_minor", "give either amount_minor or price, not both")
        quoted = v.price("price", request.price.list_price_minor, request.price.discount_rate, request.price.tax_rate)
        if quoted is not None and quoted.amount_minor <= 0:
            v.add("price", "the discounted price is zero: nothing to charge")
    else:
        v.amount("amount_minor", request.amount_minor)
    v.raise_if_any()
    assert method is not None
    amount = quoted.amount_minor if quoted else request.amount_minor
    return CreatePaymentCommand(
        order_id=request.order_id,
        user_id=request.user_id,
        amount_minor=amount,
        currency=request.currency,
        method=method,
        payee_id=request.payee_id,
        description=request.description,
        list_price_minor=quoted.list_price_minor if quoted else amount,
        discount_minor=quoted.discount_minor if quoted else 0,
        tax_minor=quoted.tax_minor if quoted else 0,
        discount_rate=request.price.discount_rate if quoted else "",
        tax_rate=request.price.tax_rate if quoted else "",
    )


def quote_price(request: pb.QuotePriceRequest) -> Quote:
    v = Violations()
    v.currency("currency", request.currency)
    quoted = v.price("", request.list_price_minor, request.discount_rate, request.tax_rate)
    v.raise_if_any()
    assert quoted is not None
    return quoted


def refund_payment(request: pb.RefundPaymentRequest) -> RefundCommand:
    v = Violations()
    v.identifier("payment_id", request.payment_id)
    v.identifier("refund_id", request.refund_id)
    if request.amount_minor != 0:  # 0 refunds everything not yet refunded
        v.amount("amount_minor", request.amount_minor)
    v.text("reason", request.reason, MAX_DESCRIPTION_CHARS)
    v.raise_if_any()
    return RefundCommand(request.payment_id, request.refund_id, request.amount_minor, request.reason)


def transfer(request: pb.TransferRequest) -> TransferCommand:
    v = Violations()
    v.identifier("transfer_id", request.transfer_id)
    v.identifier("from_user_id", request.from_user_id)
    v.identifier("to_user_id", request.to_user_id)
    if request.from_user_id and request.from_user_id == request.to_user_id:
        v.add("to_user_id", "must differ from from_user_id")
    v.amount("amount_minor", request.amount_minor)
    v.currency("currency", request.currency)
    v.raise_if_any()
    return TransferCommand(
        request.transfer_id, request.from_user_id, request.to_user_id, request.amount_minor, request.currency
    )


def list_transactions(request: pb.ListTransactionsRequest) -> TransactionsQuery:
    v = Violations()
    v.identifier("user_id", request.user_id)
    if request.page_size < 0:
        v.add("page_size", f"must not be negative, got {request.page_size}")
    after = None
    if request.page_token:
        after = decode_page_token(request.page_token)
        if after is None:
            v.add("page_token", "is not a token this API returned; pass next_page_token unchanged")
    v.raise_if_any()
    size = DEFAULT_PAGE_SIZE if request.page_size == 0 else min(request.page_size, MAX_PAGE_SIZE)
    return TransactionsQuery(request.user_id, size, after)


def encode_page_token(after_posting_id: int) -> str:
    return base64.urlsafe_b64encode(f"{PAGE_TOKEN_VERSION}:{after_posting_id}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    version, _, number = raw.partition(":")
    if version != PAGE_TOKEN_VERSION or not number.isdigit() or len(number) > 19:
        return None
    return int(number)


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
