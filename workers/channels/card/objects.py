"""The card processor's JSON objects (authorization, refund) and daily statement, read into base.py's types.

Shared by the API answers (provider.py) and the webhooks (webhook.py). Anything that does not have the shape
described here raises ProviderAnswerError: a payment state is never guessed from a half-understood object.

Authorization: {"id": "auth_...", "status": "captured" | "authorized" | "pending" | "declined" | "voided",
"decline_code": ..., "amount": <int, minor units>, "currency": "cny", "account": "acct_...",
"reference": <our out_trade_no>, "created": <unix seconds>}.
Refund: {"id": "re_...", "status": "succeeded" | "pending" | "failed", "amount", "currency", "account",
"reference": <our out_refund_no>, "authorization": "auth_...", "failure_reason": ...}.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime

from workers.channels.base import (
    AttemptStatus,
    NotificationKind,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundStatus,
    StatementLine,
)

# What a payer is told per decline code. Fraud signals are not revealed: "fraudulent" (and do_not_honor, its
# usual disguise at issuers) get the same generic text as any code we do not know, so a card tester learns
# nothing from the difference.
GENERIC_DECLINE = "The card was declined by the card issuer. Try another card or contact your bank."
_DECLINES = {
    "insufficient_funds": "The card has insufficient funds. Try another card.",
    "expired_card": "The card has expired. Try another card.",
    "incorrect_cvc": "The card's security code (CVC) is incorrect.",
}
_AUTHORIZATION = {
    "captured": AttemptStatus.SUCCEEDED,
    "authorized": AttemptStatus.PENDING,  # held, not captured yet (we ask for capture, so it is on its way)
    "pending": AttemptStatus.PENDING,  # e.g. waiting for the payer's 3-D Secure step
    "declined": AttemptStatus.FAILED,
    "voided": AttemptStatus.CLOSED,
}
_REFUND = {"succeeded": RefundStatus.SUCCEEDED, "pending": RefundStatus.PENDING, "failed": RefundStatus.FAILED}
STATEMENT_COLUMNS = ("type", "id", "reference", "authorization", "amount", "currency", "status", "created")


def decline_reason(code: object) -> str:
    return _DECLINES.get(code, GENERIC_DECLINE) if isinstance(code, str) else GENERIC_DECLINE


def _text(obj: Mapping[str, object], key: str, *, required: bool = True) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ProviderAnswerError(f"the processor's object has no usable {key!r}")
    return value


def _amount(obj: Mapping[str, object]) -> int:
    value = obj.get("amount")
    # bool is an int in Python and a float may have lost cents: neither is an amount.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderAnswerError(f"the processor stated the amount {value!r}, not whole minor units")
    return value


def _moment(value: object) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _expect_reference(obj: Mapping[str, object], reference: str) -> None:
    if obj.get("reference", reference) != reference:
        raise ProviderAnswerError(f"the processor answered about {obj.get('reference')!r}, not {reference!r}")


def authorization_state(obj: object, out_trade_no: str) -> ProviderState:
    if not isinstance(obj, Mapping):
        raise ProviderAnswerError("the processor's answer is not an authorization object")
    _expect_reference(obj, out_trade_no)
    status = _AUTHORIZATION.get(_text(obj, "status"))
    if status is None:
        raise ProviderAnswerError(f"unknown authorization status {obj['status']!r}")
    return ProviderState(
        status,
        out_trade_no,
        trade_no=_text(obj, "id"),
        amount_minor=_amount(obj),
        currency=_text(obj, "currency").upper(),
        merchant_id=_text(obj, "account", required=False),
        failure_reason=decline_reason(obj.get("decline_code")) if status is AttemptStatus.FAILED else "",
        paid_at=_moment(obj.get("created")) if status is AttemptStatus.SUCCEEDED else None,
    )


def refund_state(obj: object, out_refund_no: str, account_id: str) -> ProviderRefund:
    if not isinstance(obj, Mapping):
        raise ProviderAnswerError("the processor's answer is not a refund object")
    _expect_reference(obj, out_refund_no)
    # ProviderRefund has no merchant field for the caller to cross-check, so the account is checked here.
    if obj.get("account", account_id) != account_id:
        raise ProviderAnswerError(f"the refund belongs to account {obj.get('account')!r}, not ours")
    status = _REFUND.get(_text(obj, "status"))
    if status is None:
        raise ProviderAnswerError(f"unknown refund status {obj['status']!r}")
    reason = obj.get("failure_reason")
    return ProviderRefund(
        status,
        out_refund_no,
        refund_no=_text(obj, "id"),
        amount_minor=_amount(obj),
        currency=_text(obj, "currency").upper(),
        failure_reason=(f"the card processor refused the refund ({reason or 'no reason given'})")
        if status is RefundStatus.FAILED
        else "",
    )


def statement_lines(text: str) -> list[StatementLine]:
    """The daily statement: CSV with (at least) the header `type,id,reference,authorization,amount,currency,
    status,created`; one row per payment (type `payment`: id = authorization id, reference = out_trade_no) or
    refund (type `refund`: id = refund id, reference = out_refund_no, authorization = the refunded payment's
    id). amount is in minor units, currency lowercase ISO 4217, created unix seconds or ISO 8601 with offset.

    A refund line's trade_no is the refunded authorization (the link to the payment, since the row does not
    carry our out_trade_no); the refund's own id has no field in StatementLine."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in STATEMENT_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ProviderAnswerError(f"the statement lacks the columns {missing}")
    lines = []
    for number, row in enumerate(reader, start=2):
        if any(row[c] is None for c in STATEMENT_COLUMNS):  # a short row: DictReader fills it with None
            raise ProviderAnswerError(f"statement line {number} has too few columns")
        kind = {"payment": NotificationKind.PAYMENT, "refund": NotificationKind.REFUND}.get(row["type"])
        amount, at = row["amount"], _statement_time(row["created"])
        if kind is None or not (amount.isascii() and amount.isdigit()) or at is None or not row["reference"]:
            raise ProviderAnswerError(f"statement line {number} is not a payment or refund row we can read")
        refund = kind is NotificationKind.REFUND
        lines.append(
            StatementLine(
                kind=kind,
                out_trade_no="" if refund else row["reference"],
                trade_no=row["authorization"] if refund else row["id"],
                out_refund_no=row["reference"] if refund else "",
                amount_minor=int(amount),
                currency=row["currency"].upper(),
                status=row["status"],
                at=at,
            )
        )
    return lines


def _statement_time(text: str) -> datetime | None:
    if text.isascii() and text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None  # a time without its offset is ambiguous
