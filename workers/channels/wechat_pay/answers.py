"""WeChat Pay API v3 answer and callback bodies -> Paygate's types. Shape problems raise ValueError (or
ProviderAnswerError for a body that is not JSON); the provider turns them into the right refusal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from workers.channels.base import (
    AttemptStatus,
    Notification,
    NotificationKind,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundStatus,
)

_TRADE_STATES = {
    "SUCCESS": AttemptStatus.SUCCEEDED,
    "REFUND": AttemptStatus.SUCCEEDED,  # paid, then (partly) refunded: the payment itself happened
    "NOTPAY": AttemptStatus.PENDING,
    "USERPAYING": AttemptStatus.PENDING,
    "CLOSED": AttemptStatus.CLOSED,
    "REVOKED": AttemptStatus.CLOSED,
    "PAYERROR": AttemptStatus.FAILED,
}
_REFUND_STATES = {
    "SUCCESS": RefundStatus.SUCCEEDED,
    "PROCESSING": RefundStatus.PENDING,
    "ABNORMAL": RefundStatus.FAILED,  # the payer's account cannot take it back; needs a manual remedy
    "CLOSED": RefundStatus.FAILED,
}


def parse_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProviderAnswerError(f"WeChat Pay {what}: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProviderAnswerError(f"WeChat Pay {what}: not a JSON object")
    return value


def _fen(amount: Mapping[str, Any], name: str) -> int | None:
    value = amount.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"amount.{name} is {value!r}, not a number of fen")
    return value


def _when(text: object) -> datetime | None:
    if not text:
        return None
    if not isinstance(text, str):
        raise ValueError(f"time {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without an offset: {text!r}")
    return moment


def transaction(data: Mapping[str, Any], out_trade_no: str | None = None) -> ProviderState:
    if not isinstance(data.get("out_trade_no"), str) or out_trade_no not in (None, data["out_trade_no"]):
        raise ValueError(f"answered about {data.get('out_trade_no')!r}, not {out_trade_no!r}")
    status = _TRADE_STATES.get(data.get("trade_state", ""))
    if status is None:
        raise ValueError(f"unknown trade_state {data.get('trade_state')!r}")
    amount = data.get("amount") or {}
    if not isinstance(amount, dict):
        raise ValueError("amount is not an object")
    return ProviderState(
        status,
        data["out_trade_no"],
        trade_no=str(data.get("transaction_id") or ""),
        amount_minor=_fen(amount, "total"),
        currency=str(amount.get("currency") or ""),
        merchant_id=str(data.get("mchid") or ""),
        failure_reason=str(data.get("trade_state_desc") or "") if status is AttemptStatus.FAILED else "",
        paid_at=_when(data.get("success_time")) if status is AttemptStatus.SUCCEEDED else None,
    )


def refund_of(data: Mapping[str, Any]) -> tuple[ProviderRefund, str]:
    """A refund answer (`status`) or a decrypted refund callback (`refund_status`), and the payment it refunds."""
    state = data.get("status") or data.get("refund_status")
    status = _REFUND_STATES.get(state or "")
    if status is None or not isinstance(data.get("out_refund_no"), str) or not data["out_refund_no"]:
        raise ValueError(f"refund status {state!r} / out_refund_no {data.get('out_refund_no')!r}")
    amount = data.get("amount") or {}
    if not isinstance(amount, dict):
        raise ValueError("amount is not an object")
    refund = ProviderRefund(
        status,
        data["out_refund_no"],
        refund_no=str(data.get("refund_id") or ""),
        amount_minor=_fen(amount, "refund"),
        currency=str(amount.get("currency") or "CNY"),  # refund callbacks state no currency: CNY is all there is
        failure_reason=str(state) if status is RefundStatus.FAILED else "",
        merchant_id=str(data.get("mchid") or ""),  # refund callbacks name it; refund answers do not
    )
    return refund, str(data.get("out_trade_no") or "")


def notification(notification_id: str, nonce: str, event: object, resource: Mapping[str, Any]) -> Notification:
    if event == "TRANSACTION.SUCCESS":
        payment = transaction(resource)
        return Notification(NotificationKind.PAYMENT, notification_id, nonce, payment=payment)
    if event in ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"):
        refund, out_trade_no = refund_of(resource)
        return Notification(NotificationKind.REFUND, notification_id, nonce, refund=refund, out_trade_no=out_trade_no)
    raise ValueError(f"unexpected event_type {event!r}")
