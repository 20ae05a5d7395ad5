"""Decode and validate requests: protobuf in, a domain command out, or InvalidArgument naming every bad field.

Every field of every request goes through the one grammar of workers/codec/grammar.py (docs/api.md, "Field
grammar"), before anything is read or written, so bad input changes nothing. Amounts computed from price inputs
obey the same per-call ceiling as amounts given directly.
"""

from __future__ import annotations

from paygate.v1 import payment_gateway_pb2 as pb
from workers.codec import page_tokens
from workers.codec.grammar import Violations
from workers.domain.limits import DEFAULT_PAGE_SIZE, MAX_AMOUNT_MINOR, MAX_PAGE_SIZE, TEXT_MAX_CHARS
from workers.domain.pricing import Quote, quote
from workers.domain.types import (
    BalanceQuery,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    RefundCommand,
    TopUpCommand,
    TransactionsQuery,
    TransferCommand,
)

METHODS_BY_PROTO: dict[int, Method] = {
    pb.PAYMENT_METHOD_WALLET: Method.WALLET,
    pb.PAYMENT_METHOD_ALIPAY: Method.ALIPAY,
    pb.PAYMENT_METHOD_WECHAT_PAY: Method.WECHAT_PAY,
    pb.PAYMENT_METHOD_UNIONPAY: Method.UNIONPAY,
    pb.PAYMENT_METHOD_CARD: Method.CARD,
    pb.PAYMENT_METHOD_SANDBOX: Method.SANDBOX,
}
METHOD_NAMES: dict[int, str] = {number: pb.PaymentMethod.Name(number) for number in METHODS_BY_PROTO}
PAGE_TOKEN_RULE = "is not a token this API returned for this user_id; pass next_page_token unchanged"  # noqa: S105


def _method(v: Violations, name: str, value: int) -> Method | None:
    return METHODS_BY_PROTO[value] if v.enum(name, value, METHOD_NAMES) else None


def _price(v: Violations, prefix: str, list_price_minor: int, discount_rate: str, tax_rate: str) -> Quote | None:
    """Price inputs → a quote whose total obeys the per-call ceiling (a 100 % tax must not double it past it)."""
    before = len(v)
    v.amount(f"{prefix}list_price_minor", list_price_minor)
    discount = v.rate(f"{prefix}discount_rate", discount_rate, below_one=True)
    tax = v.rate(f"{prefix}tax_rate", tax_rate, below_one=False)
    if len(v) > before or discount is None or tax is None:
        return None
    quoted = quote(list_price_minor, discount, tax)
    if quoted.amount_minor > MAX_AMOUNT_MINOR:
        v.add(
            f"{prefix}tax_rate",
            f"with this list price, discount and tax the amount would be {quoted.amount_minor} minor units, above "
            f"the per-call ceiling of {MAX_AMOUNT_MINOR}",
        )
        return None
    if quoted.amount_minor <= 0:
        v.add(f"{prefix}discount_rate", "the discounted price is zero: nothing to charge")
        return None
    return quoted


def top_up(request: pb.TopUpRequest) -> TopUpCommand:
    v = Violations()
    v.identifier("order_id", request.order_id)
    v.identifier("user_id", request.user_id)
    v.amount("amount_minor", request.amount_minor)
    v.currency("currency", request.currency)
    method = _method(v, "method", request.method)
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
    method = _method(v, "method", request.method)
    v.identifier("payee_id", request.payee_id, required=False)
    v.text("description", request.description, TEXT_MAX_CHARS)
    quoted: Quote | None = None
    if request.HasField("price"):
        if request.amount_minor:
            v.add("amount_minor", "give either amount_minor or price, not both")
        price = request.price
        quoted = _price(v, "price.", price.list_price_minor, price.discount_rate, price.tax_rate)
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
    quoted = _price(v, "", request.list_price_minor, request.discount_rate, request.tax_rate)
    v.raise_if_any()
    assert quoted is not None
    return quoted


def refund_payment(request: pb.RefundPaymentRequest) -> RefundCommand:
    v = Violations()
    v.identifier("payment_id", request.payment_id)
    v.identifier("refund_id", request.refund_id)
    if request.amount_minor != 0:  # 0 refunds everything not yet refunded
        v.amount("amount_minor", request.amount_minor)
    v.text("reason", request.reason, TEXT_MAX_CHARS)
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
    if request.page_token and not page_tokens.well_formed(request.page_token):
        v.add("page_token", PAGE_TOKEN_RULE)
    v.raise_if_any()
    size = DEFAULT_PAGE_SIZE if request.page_size == 0 else min(request.page_size, MAX_PAGE_SIZE)
    return TransactionsQuery(request.user_id, size, request.page_token)


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
