"""Decode and validate requests: protobuf in, a domain command out, or InvalidArgument naming every bad field.

Every field of every request goes through the one grammar of workers/codec/grammar.py (docs/api.md, "Field
grammar"), before anything is read or written, so bad input changes nothing. Amounts computed from price inputs
obey the same per-call ceiling as amounts given directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from paygate.secret import Secret
from paygate.v1 import payment_gateway_pb2 as pb
from workers.codec import page_tokens
from workers.codec.grammar import E164, Violations, parse_ip_address, quote
from workers.domain.cards import VAULT_TOKEN, contains_card_number, normalize_pan
from workers.domain.limits import DEFAULT_PAGE_SIZE, MAX_AMOUNT_MINOR, MAX_PAGE_SIZE, TEXT_MAX_CHARS
from workers.domain.pricing import Quote
from workers.domain.pricing import quote as price_quote
from workers.domain.regions import is_region
from workers.domain.risk_context import RiskContext
from workers.domain.subscriptions import EventSubscription
from workers.domain.types import (
    BalanceQuery,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    RefundCommand,
    Scene,
    TopUpCommand,
    TransactionsQuery,
    TransferCommand,
)
from workers.domain.webhooks import NewWebhookEndpoint, WebhookEndpointRef
from workers.vault.cards import NewCard

METHODS_BY_PROTO: dict[int, Method] = {
    pb.PAYMENT_METHOD_WALLET: Method.WALLET,
    pb.PAYMENT_METHOD_ALIPAY: Method.ALIPAY,
    pb.PAYMENT_METHOD_WECHAT_PAY: Method.WECHAT_PAY,
    pb.PAYMENT_METHOD_UNIONPAY: Method.UNIONPAY,
    pb.PAYMENT_METHOD_CARD: Method.CARD,
    pb.PAYMENT_METHOD_SANDBOX: Method.SANDBOX,
}
METHOD_NAMES: dict[int, str] = {number: pb.PaymentMethod.Name(number) for number in METHODS_BY_PROTO}
DEFAULT_OVERLAP_HOURS = 24
MAX_OVERLAP_HOURS = 720
MAX_TYPED_CARD_CHARS = 64  # 19 digits with separators fit many times over; longer is not a card number
PAGE_TOKEN_RULE = "is not a token this API returned for this user_id; pass next_page_token unchanged"  # noqa: S105


SCENES_BY_PROTO: dict[int, Scene] = {
    pb.PAYMENT_SCENE_QR: Scene.QR,
    pb.PAYMENT_SCENE_PAGE: Scene.PAGE,
    pb.PAYMENT_SCENE_WAP: Scene.WAP,
    pb.PAYMENT_SCENE_IN_APP: Scene.IN_APP,
}
SCENE_NAMES: dict[int, str] = {number: pb.PaymentScene.Name(number) for number in (0, *SCENES_BY_PROTO)}
# The scenes each provider offers (docs/api.md, "Channels"); the others take none.
SCENES_OF: dict[Method, frozenset[Scene]] = {
    Method.ALIPAY: frozenset({Scene.QR, Scene.PAGE, Scene.WAP}),
    Method.WECHAT_PAY: frozenset({Scene.QR, Scene.IN_APP}),
    Method.UNIONPAY: frozenset({Scene.PAGE, Scene.WAP, Scene.IN_APP}),
}


# The Chinese providers' domestic interfaces settle in yuan only.
CNY_ONLY = frozenset({Method.ALIPAY, Method.WECHAT_PAY, Method.UNIONPAY})


@dataclass(frozen=True)
class ChannelInputs:
    scene: str
    card_token: str
    payer_openid: str


def _channel_inputs(
    v: Violations, method: Method | None, currency: str, scene_number: int, card_token: str, payer_openid: str
) -> ChannelInputs:
    """What a provider needs from the payer's side, checked against the method it is for."""
    scene = SCENES_BY_PROTO.get(scene_number) if v.enum("scene", scene_number, SCENE_NAMES) else None
    if scene is not None and method is not None and scene not in SCENES_OF.get(method, frozenset()):
        offered = ", ".join(f"PAYMENT_SCENE_{s.name}" for s in sorted(SCENES_OF.get(method, ()))) or "none"
        v.add("scene", f"{method.name} offers the scenes: {offered}")
    # Never quoted: the message must not carry the number. Only values an identifier could be are searched (the
    # search costs more per character, and longer ones are refused anyway); a vault token's shape is ours.
    typed = len(card_token) <= MAX_TYPED_CARD_CHARS and VAULT_TOKEN.fullmatch(card_token) is None
    if typed and contains_card_number(card_token):
        v.add("card_token", "is a card number; send it to TokenizeCard and pay with the pgcard_ token it answers")
    else:
        v.identifier("card_token", card_token, required=False)
    if method in CNY_ONLY and currency and currency != "CNY":
        v.add("currency", f"{method.name} takes CNY only")
    if method is Method.CARD and not card_token:
        v.add("card_token", "is required for CARD: a card token from TokenizeCard, or your processor's token")
    elif card_token and method is not Method.CARD:
        v.add("card_token", "is only for CARD payments")
    v.identifier("payer_openid", payer_openid, required=False)
    in_app_wechat = method is Method.WECHAT_PAY and scene is Scene.IN_APP
    if in_app_wechat and not payer_openid:
        v.add("payer_openid", "is required for WECHAT_PAY in PAYMENT_SCENE_IN_APP: the payer's openid")
    elif payer_openid and not in_app_wechat:
        v.add("payer_openid", "is only for WECHAT_PAY in PAYMENT_SCENE_IN_APP")
    return ChannelInputs(scene.value if scene else "", card_token, payer_openid)


def _risk_context(v: Violations, risk: pb.RiskContext) -> RiskContext:
    """The payer's side for the risk engine (docs/risk.md): every field optional, each checked when given."""
    v.identifier("risk.device_id", risk.device_id, required=False)
    ip_address = ""
    if risk.ip_address:
        ip_address = parse_ip_address(risk.ip_address) or ""
        if not ip_address:
            v.add(
                "risk.ip_address", f"must be an IPv4 or IPv6 address without port or zone; got {quote(risk.ip_address)}"
            )
    if risk.phone_number and E164.fullmatch(risk.phone_number) is None:
        # The number is never echoed: it may be a real one with a typo.
        v.add(
            "risk.phone_number",
            f"must be E.164: '+', then 2-15 digits, the first not 0 ({len(risk.phone_number)} characters given)",
        )
    if risk.region and not is_region(risk.region):
        v.add("risk.region", f"must be an ISO 3166-1 alpha-2 code in upper case, e.g. CN; got {quote(risk.region)}")
    return RiskContext(risk.device_id, ip_address, risk.phone_number, risk.region)


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
    quoted = price_quote(list_price_minor, discount, tax)
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
    inputs = _channel_inputs(v, method, request.currency, request.scene, request.card_token, request.payer_openid)
    risk = _risk_context(v, request.risk)
    v.raise_if_any()
    assert method is not None
    return TopUpCommand(
        request.order_id,
        request.user_id,
        request.amount_minor,
        request.currency,
        method,
        scene=inputs.scene,
        card_token=inputs.card_token,
        payer_openid=inputs.payer_openid,
        risk=risk,
    )


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
    inputs = _channel_inputs(v, method, request.currency, request.scene, request.card_token, request.payer_openid)
    risk = _risk_context(v, request.risk)
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
        scene=inputs.scene,
        card_token=inputs.card_token,
        payer_openid=inputs.payer_openid,
        risk=risk,
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


def stream_events(request: pb.StreamEventsRequest) -> EventSubscription:
    v = Violations()
    v.identifier("after_cursor", request.after_cursor, required=False)
    types = _event_types(v, request.types)
    v.raise_if_any()
    return EventSubscription(after_cursor=request.after_cursor, types=types)


def _event_types(v: Violations, numbers: Sequence[int]) -> frozenset[str]:
    names: set[str] = set()
    for index, number in enumerate(numbers):
        if number == pb.EVENT_TYPE_UNSPECIFIED or number not in pb.EventType.values():
            v.add(f"types[{index}]", f"is not an event type (got {number}); see docs/events.md for the list")
        else:
            names.add(pb.EventType.Name(number))
    return frozenset(names)


def create_webhook_endpoint(request: pb.CreateWebhookEndpointRequest) -> NewWebhookEndpoint:
    v = Violations()
    if not request.url:
        v.add("url", "is required: the http(s) URL your events are POSTed to")
    types = _event_types(v, request.types)
    v.raise_if_any()
    return NewWebhookEndpoint(url=request.url, types=types)  # the URL's own rules: workers/webhooks/endpoints.py


def webhook_endpoint_ref(request: pb.DeleteWebhookEndpointRequest) -> WebhookEndpointRef:
    v = Violations()
    v.identifier("endpoint_id", request.endpoint_id)
    v.raise_if_any()
    return WebhookEndpointRef(request.endpoint_id)


def rotate_webhook_secret(request: pb.RotateWebhookEndpointSecretRequest) -> WebhookEndpointRef:
    v = Violations()
    v.identifier("endpoint_id", request.endpoint_id)
    if not 0 <= request.overlap_hours <= MAX_OVERLAP_HOURS:
        v.add("overlap_hours", f"must be between 0 (the default, 24) and {MAX_OVERLAP_HOURS}")
    v.raise_if_any()
    return WebhookEndpointRef(request.endpoint_id, request.overlap_hours or DEFAULT_OVERLAP_HOURS)


def list_webhook_endpoints(request: pb.ListWebhookEndpointsRequest) -> None:
    return None  # nothing to decode: the caller's own endpoints


def tokenize_card(request: pb.TokenizeCardRequest) -> NewCard:
    """A card for the vault. The number is never quoted back (docs/security.md, "Card and personal data")."""
    v = Violations()
    number = normalize_pan(request.card_number) if len(request.card_number) <= MAX_TYPED_CARD_CHARS else None
    if not request.card_number:
        v.add("card_number", "is required: 12-19 digits (spaces or dashes between them allowed)")
    elif number is None:
        v.add("card_number", "is not a valid card number (12-19 digits passing the Luhn check)")
    if not 1 <= request.exp_month <= 12:
        v.add("exp_month", f"must be 1-12, got {request.exp_month}")
    if not 2000 <= request.exp_year <= 2100:
        v.add("exp_year", f"must be a four-digit year in 2000-2100, got {request.exp_year}")
    v.raise_if_any()
    assert number is not None
    return NewCard(Secret(number), request.exp_month, request.exp_year)
