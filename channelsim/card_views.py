"""The card processor's JSON objects, its error shape and its webhook events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channelsim.common import now, token
from channelsim.store import Order, Refund

if TYPE_CHECKING:
    from channelsim.card import Card

EVENTS = {
    "failed": "authorization.declined",
    "captured": "authorization.captured",
    "voided": "authorization.voided",
    "refund": "refund.succeeded",
}


def reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def error(status: int, kind: str, message: str, code: str | None = None, **extra: Any) -> tuple[int, dict[str, Any]]:
    """(status, body) of an error: {"error": {"type", "code", "message", ...}} (Stripe's shape)."""
    body: dict[str, Any] = {"type": kind, "message": message}
    if code:
        body["code"] = code
    body.update(extra)
    return status, {"error": body}


def authorization(card: Card, order: Order) -> dict[str, Any]:
    return {
        "id": order.trade_no,
        "object": "authorization",
        "status": card.status_of(order),
        "amount": order.amount,
        "amount_captured": order.paid_amount,
        "amount_refunded": card.store.refunded(order.id),
        "currency": order.currency,
        "capture": bool(order.extra.get("capture", True)),
        "reference": order.out_trade_no,
        "decline_code": order.fail_code if order.status == "failed" else None,
        "card": {"brand": order.extra.get("brand", ""), "last4": order.extra.get("last4", "")},
        "created": int(order.created_at),
        "notification_url": order.notify_url or None,
        "livemode": False,
    }


def refund(order: Order, item: Refund) -> dict[str, Any]:
    return {
        "id": item.refund_no,
        "object": "refund",
        "status": item.status,
        "amount": item.amount,
        "currency": order.currency,
        "authorization": order.trade_no,
        "reference": item.out_refund_no,
        "reason": item.extra.get("reason"),
        "created": int(item.created_at),
        "notification_url": item.notify_url or None,
    }


def event(card: Card, kind: str, order: Order, item: Refund | None, flags: set[str]) -> tuple[str, str] | None:
    """(url, JSON body) of the webhook event for an engine event, with the callback misbehaviour applied."""
    if item is not None:
        url, obj, name = item.notify_url, refund(order, item), EVENTS["refund"]
    else:
        url, obj = order.notify_url, authorization(card, order)
        name = EVENTS.get(kind, "")
        if kind == "paid":
            name = "authorization.captured" if order.paid_amount > 0 else "authorization.authorized"
    if not name or not url:
        return None
    if "wrong_amount" in flags:
        obj["amount"] += 1
        if obj.get("amount_captured"):
            obj["amount_captured"] += 1
    if "wrong_currency" in flags:
        obj["currency"] = "eur" if obj["currency"] != "eur" else "usd"
    account = card.keys.identity["card_account"]
    body = {
        "id": "evt_" + token(24),
        "object": "event",
        "type": name,
        "created": int(now()),
        "account": "acct_" + token(16) if "wrong_app_id" in flags else account,
        "data": {"object": obj},
    }
    return url, json.dumps(body, separators=(",", ":"))
