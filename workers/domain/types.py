"""Domain types of the workers: validated commands in, records out. No protobuf and no SQL here."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from workers.domain.limits import MAX_SYSTEM_BALANCE_MINOR, MAX_USER_BALANCE_MINOR
from workers.domain.risk_context import NO_CONTEXT, RiskContext


class Method(enum.StrEnum):
    WALLET = "wallet"
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"
    UNIONPAY = "unionpay"
    CARD = "card"
    SANDBOX = "sandbox"


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CLOSED = "closed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    IN_REVIEW = "in_review"  # held by the risk engine for an operator (docs/risk.md): nothing moved yet


class AttemptStatus(enum.StrEnum):
    """The status of one attempt at a channel (docs/architecture.md, "Channels")."""

    CREATED = "created"  # written, provider not called yet (or the call's outcome was lost with a crash)
    PENDING = "pending"  # the provider holds the order; the payer has not paid yet
    UNKNOWN = "unknown"  # the call timed out or the answer was ambiguous: only a query may tell
    SUCCEEDED = "succeeded"  # the provider says the money was taken
    FAILED = "failed"  # declined, or refused by the provider: nothing was taken
    CLOSED = "closed"  # closed at the provider before it was paid: nothing can be taken any more

    @property
    def settled(self) -> bool:
        return self in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CLOSED)


class Scene(enum.StrEnum):
    """Where the payer is, which decides what the provider hands back for them."""

    QR = "qr"  # a QR code to scan (Alipay precreate, WeChat Native)
    PAGE = "page"  # a desktop web page to redirect to (Alipay page.pay, UnionPay front consume)
    WAP = "wap"  # a mobile web page (Alipay wap.pay)
    IN_APP = "in_app"  # inside the provider's app (WeChat JSAPI prepay id, UnionPay tn)
    CARD = "card"  # a processor token collected by the caller's checkout


class RefundStatus(enum.StrEnum):
    PENDING = "pending"  # accepted by the provider (or about to be asked), money not yet back with the payer
    UNKNOWN = "unknown"  # a provider answer that could not tell (never stored: the refund stays PENDING)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PaymentType(enum.StrEnum):
    TOP_UP = "top_up"
    PURCHASE = "purchase"


class AccountKind(enum.StrEnum):
    WALLET = "wallet"  # a learner's spendable money; never negative
    PAYABLE = "payable"  # what the platform owes a course creator; never negative
    REVENUE = "revenue"  # the platform's own income
    CLEARING = "clearing"  # money in transit with an external channel; negative = owed to us by the channel
    # Refunds accepted but not yet confirmed by the channel: owed back to payers through it. Credited when a
    # refund is opened, debited when the provider confirms it (into clearing) or it fails (back to its sources).
    IN_TRANSIT = "in_transit"
    # Differences reconciliation found between a provider's statement and our ledger, booked by an operator's
    # explicit correction (`paygate reconcile correct`) until they are explained; may go either way.
    SUSPENSE = "suspense"

    @property
    def non_negative(self) -> bool:
        return self in (AccountKind.WALLET, AccountKind.PAYABLE, AccountKind.IN_TRANSIT)

    @property
    def balance_range(self) -> tuple[int, int]:
        """(lowest, highest) balance the account may hold (docs/api.md, "Limits")."""
        if self.non_negative:
            return 0, MAX_USER_BALANCE_MINOR
        return -MAX_SYSTEM_BALANCE_MINOR, MAX_SYSTEM_BALANCE_MINOR

    def describe(self, subject: str) -> str:
        """How an error message names an account of this kind."""
        return {
            AccountKind.WALLET: f"the wallet of {subject!r}",
            AccountKind.PAYABLE: f"the payable of creator {subject!r}",
            AccountKind.REVENUE: "the platform's revenue account",
            AccountKind.CLEARING: f"the clearing account of the {subject} channel",
            AccountKind.IN_TRANSIT: f"the refunds in transit through the {subject} channel",
            AccountKind.SUSPENSE: f"the reconciliation suspense account of the {subject} channel",
        }[self]


PLATFORM_SUBJECT = "platform"


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the gateway authenticated it."""

    owner: str
    key_id: str
    request_id: str


@dataclass(frozen=True)
class TopUpCommand:
    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    method: Method
    # What a provider needs from the payer's side (docs/api.md, "Channels"); "" when not given.
    scene: str = ""
    card_token: str = ""
    payer_openid: str = ""
    risk: RiskContext = NO_CONTEXT  # what the risk engine weighs; not part of the request's fingerprint

    operation = "TopUp"


@dataclass(frozen=True)
class CreatePaymentCommand:
    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    method: Method
    payee_id: str
    description: str
    # The price breakdown: given as PriceInputs, or else list price = amount with no discount or tax.
    list_price_minor: int = 0
    discount_minor: int = 0
    tax_minor: int = 0
    discount_rate: str = ""
    tax_rate: str = ""
    scene: str = ""
    card_token: str = ""
    payer_openid: str = ""
    risk: RiskContext = NO_CONTEXT

    operation = "CreatePayment"


@dataclass(frozen=True)
class RefundCommand:
    payment_id: str
    refund_id: str
    amount_minor: int  # 0: everything not yet refunded
    reason: str

    operation = "RefundPayment"


@dataclass(frozen=True)
class TransferCommand:
    transfer_id: str
    from_user_id: str
    to_user_id: str
    amount_minor: int
    currency: str

    operation = "Transfer"


@dataclass(frozen=True)
class TransactionsQuery:
    user_id: str
    page_size: int
    page_token: str  # as the caller sent it (shape-checked); the service verifies it for this owner and user


@dataclass(frozen=True)
class TransactionRecord:
    posting_id: int
    entry_id: str
    amount_minor: int
    currency: str
    kind: str
    reference_id: str
    created_at: datetime


@dataclass(frozen=True)
class TransactionsPage:
    transactions: list[TransactionRecord]
    next_page_token: str  # empty on the last page


@dataclass(frozen=True)
class PaymentLookup:
    payment_id: str
    order_id: str


@dataclass(frozen=True)
class BalanceQuery:
    user_id: str
    currency: str


Command = TopUpCommand | CreatePaymentCommand | RefundCommand | TransferCommand


# Fields added after a release join the fingerprint only when set, so a retry of a call made before the upgrade
# still matches its idempotency record.
_FINGERPRINT_ONLY_WHEN_SET = ("scene", "card_token", "payer_openid")


def flat_fields(record: Any) -> dict[str, Any]:
    """A flat dataclass's fields as a dict. `dataclasses.asdict` deep-copies every value, which cost ~100 µs per
    payment on the purchase path (docs/benchmarks.md); these records hold only strings, numbers, enums and
    datetimes, so a shallow copy is the same dict."""
    return dict(vars(record))


def request_hash(command: Command) -> str:
    """sha256 over the operation and every field: the fingerprint an idempotency key is bound to."""
    fields_ = flat_fields(command)
    fields_.pop("risk", None)  # the payer's circumstances (docs/risk.md), not what is asked: a retry may differ
    for name in _FINGERPRINT_ONLY_WHEN_SET:
        if fields_.get(name) == "":
            del fields_[name]
    canonical = json.dumps({"operation": command.operation, **fields_}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PaymentRecord:
    payment_id: str
    owner: str
    order_id: str
    payment_type: PaymentType
    user_id: str
    payee_id: str
    amount_minor: int
    currency: str
    method: Method
    status: PaymentStatus
    refunded_minor: int
    failure_reason: str
    description: str
    entry_id: str | None
    created_at: datetime
    updated_at: datetime
    list_price_minor: int = 0
    discount_minor: int = 0
    tax_minor: int = 0
    creator_amount_minor: int = 0
    platform_fee_minor: int = 0
    attempt_id: str | None = None  # the attempt carrying it at its channel; None for wallet payments
    # From the current attempt, for the caller: what the payer needs, and the provider's reference.
    scene: str = ""
    pay_url: str = ""
    qr_code: str = ""
    prepay_id: str = ""
    channel_trade_no: str = ""
    card_masked: str = ""  # "**** 4242" for a card from the vault (docs/security.md, "Card and personal data")
    # Set when the risk engine held it for review (docs/risk.md): "review", "0.84", "rule-a,rule-b".
    risk_decision: str = ""
    risk_score: str = ""
    risk_reasons: str = ""

    def to_json(self) -> bytes:
        return json.dumps(flat_fields(self), default=_json_default, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PaymentRecord:
        data: dict[str, Any] = json.loads(raw)
        data["payment_type"] = PaymentType(data["payment_type"])
        data["method"] = Method(data["method"])
        data["status"] = PaymentStatus(data["status"])
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        data["updated_at"] = datetime.fromisoformat(data["updated_at"])
        return cls(**data)

    @classmethod
    def from_row(cls, row: Any) -> PaymentRecord:
        values = {f.name: getattr(row, f.name) for f in fields(cls)}
        values["payment_type"] = PaymentType(values["payment_type"])
        values["method"] = Method(values["method"])
        values["status"] = PaymentStatus(values["status"])
        for name in ("scene", "pay_url", "qr_code", "prepay_id", "channel_trade_no", "card_masked"):
            values[name] = values[name] or ""  # no attempt (a wallet payment): the outer join gave NULL
        # SQLite hands timestamps back without their zone; they were written in UTC.
        for name in ("created_at", "updated_at"):
            if values[name].tzinfo is None:
                values[name] = values[name].replace(tzinfo=UTC)
        return cls(**values)


@dataclass(frozen=True)
class AttemptRecord:
    """One try at one channel to collect a payment; `attempt_id` is the out_trade_no the provider knows."""

    attempt_id: str
    payment_id: str
    owner: str
    method: Method
    status: AttemptStatus
    scene: str
    payer: str  # the card token or WeChat openid the provider needs again if the call must be repeated
    amount_minor: int
    currency: str
    trade_no: str
    failure_reason: str
    pay_url: str
    qr_code: str
    prepay_id: str
    created_at: datetime
    updated_at: datetime
    next_check_at: datetime | None
    checks: int
    card_masked: str = ""  # a card from the vault, as it may be shown

    @classmethod
    def from_row(cls, row: Any) -> AttemptRecord:
        values = {f.name: getattr(row, f.name) for f in fields(cls)}
        values["method"] = Method(values["method"])
        values["status"] = AttemptStatus(values["status"])
        for name in ("created_at", "updated_at", "next_check_at"):
            if values[name] is not None and values[name].tzinfo is None:
                values[name] = values[name].replace(tzinfo=UTC)
        return cls(**values)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


@dataclass(frozen=True)
class RefundRecord:
    refund_id: str
    payment_id: str
    amount_minor: int
    currency: str
    creator_amount_minor: int
    platform_fee_minor: int
    reason: str
    entry_id: str
    created_at: datetime
    payment_status: PaymentStatus
    # Through a provider: PENDING until it confirms; wallet and sandbox refunds are SUCCEEDED at once.
    status: RefundStatus = RefundStatus.SUCCEEDED
    out_refund_no: str = ""
    channel_refund_no: str = ""
    failure_reason: str = ""

    def to_json(self) -> bytes:
        return json.dumps(flat_fields(self), default=_json_default, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RefundRecord:
        data: dict[str, Any] = json.loads(raw)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        data["payment_status"] = PaymentStatus(data["payment_status"])
        data["status"] = RefundStatus(data.get("status", RefundStatus.SUCCEEDED))
        return cls(**data)


@dataclass(frozen=True)
class TransferRecord:
    transfer_id: str
    from_user_id: str
    to_user_id: str
    amount_minor: int
    currency: str
    entry_id: str
    created_at: datetime

    def to_json(self) -> bytes:
        return json.dumps(flat_fields(self), default=_json_default, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TransferRecord:
        data: dict[str, Any] = json.loads(raw)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)
