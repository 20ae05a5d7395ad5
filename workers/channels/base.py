"""What every payment channel speaks, whatever its wire protocol (docs/architecture.md, "Channels").

A payment is the intent ("take 12.34 CNY from this learner for this course"); an **attempt** is one try at one
channel, with the provider's own reference and status. The attempt row is written before the provider is
called, so a crash at any point leaves a row that the janitor can resolve by querying the provider — never a
charge nobody recorded. The provider knows an attempt by its `out_trade_no`, which is the attempt id.

Each provider (alipay/, wechat_pay/, unionpay/, card/) is a pure translator: it turns what we want into an
`HttpCall` and turns the provider's `HttpReply`, notification or statement into the types below. It does no I/O,
keeps no state and reads no clock (`now` is passed in), so it can be tested byte for byte. The one network
client (channels/http.py) sends the calls; the operations decide what the answers mean for the ledger.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Protocol

from paygate.secret import Secret
from workers.domain.types import AttemptStatus, Method, RefundStatus, Scene  # defined with the records


@dataclass(frozen=True)
class PaymentCard:
    """A card from Paygate's vault, revealed for the processor's request only (docs/security.md, "Card and
    personal data"): the number stays a Secret until the request body is built."""

    number: Secret[str]
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class Order:
    """What we ask a provider to charge (one attempt)."""

    out_trade_no: str  # the attempt id; the provider deduplicates on it
    amount_minor: int
    currency: str
    subject: str  # shown to the payer; never empty (providers require it)
    notify_url: str  # where the provider sends its asynchronous notification
    scene: Scene
    payer: str  # card: the processor token; WeChat JSAPI: the payer's openid; otherwise ""
    created_at: datetime
    expires_at: datetime  # the provider closes the order by itself after this
    card: PaymentCard | None = field(default=None, repr=False)  # card: from the vault (then payer is its token)


@dataclass(frozen=True)
class ProviderState:
    """What the provider says about one order: the answer to a create, query or close, or a notification."""

    status: AttemptStatus
    out_trade_no: str
    trade_no: str = ""  # the provider's own reference, once it has one
    amount_minor: int | None = None  # as the provider states it (in minor units), for the exact cross-check
    currency: str = ""
    merchant_id: str = ""  # app_id / mchid / merId as the provider states it, for the cross-check
    failure_reason: str = ""  # for a FAILED attempt: something the caller can show the payer
    pay_url: str = ""
    qr_code: str = ""
    prepay_id: str = ""
    paid_at: datetime | None = None


@dataclass(frozen=True)
class RefundOrder:
    """What we ask a provider to give back (one refund of one attempt)."""

    out_trade_no: str
    trade_no: str
    out_refund_no: str  # our refund id at the provider; it deduplicates on it
    amount_minor: int
    total_minor: int  # the attempt's full amount (WeChat and UnionPay ask for it)
    currency: str
    reason: str
    notify_url: str
    created_at: datetime


@dataclass(frozen=True)
class ProviderRefund:
    status: RefundStatus
    out_refund_no: str
    refund_no: str = ""  # the provider's reference for the refund
    amount_minor: int | None = None
    currency: str = ""
    failure_reason: str = ""
    merchant_id: str = ""  # as the provider states it, for the cross-check


@dataclass(frozen=True)
class HttpCall:
    """One request to a provider. `idempotent` says whether sending it twice is harmless (a query, or a create
    the provider deduplicates by a key): only those are retried by the HTTP client."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # may carry credentials (a card API key)
    body: bytes = field(repr=False)
    idempotent: bool
    purpose: str  # "create", "query", "close", "refund", "refund_query", "statement": for metrics and logs


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes


class NotificationKind(enum.StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


@dataclass(frozen=True)
class Notification:
    """A provider callback, verified (signature, and for WeChat the timestamp window) and decrypted."""

    kind: NotificationKind
    notification_id: str  # the provider's id for it (or a digest of its body when it has none)
    nonce: str  # WeChat's Wechatpay-Nonce; "" for providers without one (the worker checks reuse)
    payment: ProviderState | None = None
    refund: ProviderRefund | None = None
    out_trade_no: str = ""  # for a refund notification: the payment it refunds


@dataclass(frozen=True)
class StatementLine:
    """One line of a provider's daily statement (bill), in minor units."""

    kind: NotificationKind  # a payment or a refund
    out_trade_no: str
    trade_no: str
    out_refund_no: str  # "" for payments
    amount_minor: int
    currency: str
    status: str  # the provider's own word for it, kept for the report
    at: datetime
    refund_no: str = ""  # for refunds: the provider's own id of the refund


# The failure_reason of a FAILED state that means "the provider has no such order" (a query's answer). The
# janitor and the refund flow compare against it: providers must use this constant, not their own spelling.
NOT_FOUND = "not found"

# The clock and calendar of Alipay, WeChat Pay and UnionPay: Beijing time. China keeps no daylight saving, so a
# fixed +08:00 offset is exact and needs no time zone database on the host.
CHINA_TIME = timezone(timedelta(hours=8), "Asia/Shanghai")
_YUAN = re.compile(r"(-?)(0|[1-9][0-9]{0,15})\.([0-9]{2})")


def parse_yuan(text: object, *, allow_negative: bool = False) -> int:
    """Parse "12.30" as 1230 fen: exactly two decimals, never a float; a leading minus only where the document
    states refunds negative."""
    match = _YUAN.fullmatch(text) if isinstance(text, str) else None
    if match is None or (match.group(1) and not allow_negative):
        raise ValueError(f"not a yuan amount with exactly two decimals: {text!r}")
    fen = int(match.group(2)) * 100 + int(match.group(3))
    return -fen if match.group(1) else fen


class ProviderAnswerError(Exception):
    """The provider's answer could not be trusted or understood (bad signature, unexpected shape): the outcome of
    the call is unknown, and only a later query may tell."""


class NotificationRejected(Exception):
    """A callback that fails verification: forged, stale, malformed. `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Provider(Protocol):
    """A pure protocol translator for one provider (see the module docstring)."""

    method: Method
    merchant_id: str  # what the provider's answers and notifications must name: app_id, mchid, merId, account

    def create(self, order: Order, now: datetime) -> HttpCall | ProviderState:
        """The call that opens the order; or, where the provider needs no call (a signed redirect URL such as
        Alipay page.pay), the PENDING state with the URL straight away."""
        ...

    def read_create(self, order: Order, reply: HttpReply) -> ProviderState: ...

    def query(self, out_trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        """`created_at`: when the attempt was opened (UnionPay finds an order only by its txnTime)."""
        ...

    def read_query(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        """A query for an order the provider never received answers FAILED with failure_reason "not found"."""
        ...

    def close(
        self, out_trade_no: str, trade_no: str, now: datetime, created_at: datetime | None = None
    ) -> HttpCall: ...

    def read_close(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        """CLOSED when the order can no longer be paid; SUCCEEDED if it was paid before the close arrived."""
        ...

    def refund(self, order: RefundOrder, now: datetime) -> HttpCall: ...

    def read_refund(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund: ...

    def refund_query(self, order: RefundOrder, now: datetime) -> HttpCall: ...

    def read_refund_query(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund: ...

    def read_notification(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Notification:
        """Verify and decode a callback; raises NotificationRejected."""
        ...

    def acknowledge(self, accepted: bool) -> HttpReply:
        """What the provider expects back: success stops its retries, failure makes it retry (or review)."""
        ...

    def statement(self, day: date, now: datetime) -> HttpCall: ...

    def read_statement(self, day: date, reply: HttpReply, now: datetime) -> HttpCall | list[StatementLine]:
        """The statement's lines; or, for providers that answer with a download URL first, the next call."""
        ...


class Channel(Protocol):
    """A channel as the operations use it: a provider behind the network (channels/adapter.py), or the in-process
    sandbox. Answers are the provider's state of the attempt; an ambiguous outcome is an UNKNOWN state, never a
    guess. Only a channel refusing to be called at all (its circuit is open) raises, with UNAVAILABLE."""

    method: Method

    def check_available(self) -> None:
        """Raise UNAVAILABLE, before anything is written, when the channel is refusing calls (circuit open)."""
        ...

    def open(self, order: Order) -> ProviderState: ...

    def query(self, out_trade_no: str, created_at: datetime) -> ProviderState: ...

    def close(self, out_trade_no: str, trade_no: str, created_at: datetime) -> ProviderState: ...

    def refund(self, order: RefundOrder) -> ProviderRefund: ...

    def refund_query(self, order: RefundOrder) -> ProviderRefund: ...
