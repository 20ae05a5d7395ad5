"""A Stripe-like card processor under /card/v1/: bearer API key, Idempotency-Key on every POST, tokens,
authorizations (capture now or later), voids, refunds, statements, and HMAC-signed webhooks
(`Card-Signature: t=<unix>,v1=<hex HMAC-SHA256(webhook_secret, f"{t}.{body}")>`).

Card numbers are reduced to brand + last 4 digits when the token is made, or when an authorization carries the
card itself (`"card": {"number", "exp_month", "exp_year"}` instead of `"token"`, as a merchant with its own vault
sends it); the number itself is never kept.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from channelsim import bills
from channelsim import card_views as views
from channelsim.common import TEST_CARDS, luhn_ok, now, parse_day, token
from channelsim.crypto import hmac_hex
from channelsim.provider import Line, Note, Provider
from channelsim.store import Order, Refund

API = "/card/v1"
DECLINE_CODES = ("insufficient_funds", "do_not_honor", "expired_card", "incorrect_cvc", "fraudulent")
IDEMPOTENCY_KEEP_SECONDS = 24 * 3600
MAX_REFUNDS = 50
MAX_LIST = 100
URL = re.compile(r"^https?://\S+$")
Result = tuple[int, dict[str, Any]]
Handler = Callable[[web.Request, dict[str, Any]], Result]


def brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("51", "52", "53", "54", "55") or number[:2] == "22":
        return "mastercard"
    if number[:2] in ("34", "37"):
        return "amex"
    return "unionpay" if number.startswith("62") else "unknown"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Card(Provider):
    name = "card"
    statement_tz = UTC
    default_fail_code = "do_not_honor"

    def add_routes(self, app: web.Application) -> None:
        wrap = self._wrap
        app.router.add_post(f"{API}/tokens", wrap(self.create_token))
        app.router.add_post(f"{API}/authorizations", wrap(self.authorize))
        app.router.add_get(f"{API}/authorizations", wrap(self.list_authorizations))
        app.router.add_get(f"{API}/authorizations/{{id}}", wrap(self.get_authorization))
        app.router.add_post(f"{API}/authorizations/{{id}}/capture", wrap(self.capture))
        app.router.add_post(f"{API}/authorizations/{{id}}/void", wrap(self.void))
        app.router.add_post(f"{API}/refunds", wrap(self.refund))
        app.router.add_get(f"{API}/refunds", wrap(self.list_refunds))
        app.router.add_get(f"{API}/refunds/{{id}}", wrap(self.get_refund))
        app.router.add_get(f"{API}/statements/{{day}}", self.statement)
        app.router.add_route("*", "/card/{tail:.*}", self.not_found)

    # plumbing: authentication, JSON bodies, idempotency
    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and secrets.compare_digest(key.strip().encode(), self.keys.card_api_key.encode())

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            if not self._authenticated(request):
                return views.reply(
                    *views.error(401, "authentication_error", "Invalid API key provided.", "invalid_api_key")
                )
            raw = await request.read()
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                data = None
            if not isinstance(data, dict):
                return views.reply(
                    *views.error(400, "invalid_request_error", "The body must be a JSON object.", "parameter_invalid")
                )
            key = request.headers.get("Idempotency-Key", "") if request.method == "POST" else ""
            if not key:
                return views.reply(*handler(request, data))
            return self._idempotent(request, key[:255], raw, handler, data)

        return endpoint

    def _idempotent(
        self, request: web.Request, key: str, raw: bytes, handler: Handler, data: dict[str, Any]
    ) -> web.Response:
        # Keyed, so that the stored fingerprint of a /tokens body says nothing about the card number in it.
        fingerprint = hmac_hex(self.keys.sim_secret.hex(), f"{request.method} {request.path}\n".encode() + raw)
        stored = self.store.idempotency(key)
        if stored is not None and stored["created_at"] < now() - IDEMPOTENCY_KEEP_SECONDS:
            stored = None
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                return views.reply(
                    *views.error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                        "idempotency_key_in_use",
                    )
                )
            if stored["status"] == 0:
                return views.reply(
                    *views.error(
                        409, "idempotency_error", "A request with this key is in progress.", "idempotency_key_in_use"
                    )
                )
            return web.Response(
                status=stored["status"],
                text=stored["body"],
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        self.store.begin_idempotent(key, fingerprint, now(), IDEMPOTENCY_KEEP_SECONDS)
        try:
            status, body = handler(request, data)
        except Exception:
            self.store.finish_idempotent(key, 0, None)
            raise
        text = json.dumps(body)
        self.store.finish_idempotent(key, status, text if status < 500 else None)
        return web.Response(status=status, text=text, content_type="application/json", headers={"Idempotency-Key": key})

    # tokens and authorizations
    def _card_problem(self, number: str, month: int | None, year: int | None) -> Result | None:
        if not luhn_ok(number):
            return views.error(402, "card_error", "Your card number is incorrect.", "incorrect_number")
        if month is None or not 1 <= month <= 12:
            return views.error(402, "card_error", "Your card's expiration month is invalid.", "invalid_expiry_month")
        today = datetime.now(UTC)
        if year is None or not 2000 <= year <= 2100:
            return views.error(402, "card_error", "Your card's expiration year is invalid.", "invalid_expiry_year")
        if (year, month) < (today.year, today.month):
            return views.error(402, "card_error", "Your card has expired.", "expired_card")
        return None

    def create_token(self, _request: web.Request, data: dict[str, Any]) -> Result:
        number = re.sub(r"[ -]", "", str(data.get("number", "")))
        month, year, cvc = _int(data.get("exp_month")), _int(data.get("exp_year")), str(data.get("cvc", ""))
        if year is not None and year < 100:
            year += 2000
        problem = self._card_problem(number, month, year)
        if problem is not None:
            return problem
        assert month is not None and year is not None
        if not re.fullmatch(r"\d{3,4}", cvc):
            return views.error(402, "card_error", "Your card's security code is invalid.", "invalid_cvc")
        token_id, card = "tok_" + token(24), {"brand": brand(number), "last4": number[-4:]}
        self.store.add_token(
            id=token_id,
            exp_month=month,
            exp_year=year,
            outcome=TEST_CARDS.get(number, "success"),
            created_at=now(),
            **card,
        )
        return 200, {
            "id": token_id,
            "object": "token",
            "created": int(now()),
            "used": False,
            "card": {**card, "exp_month": month, "exp_year": year},
        }

    def _authorize_problem(self, data: dict[str, Any]) -> Result | None:
        amount, currency, reference = _int(data.get("amount")), data.get("currency"), data.get("reference")
        if not isinstance(data.get("token"), str) and not isinstance(data.get("card"), dict):
            return views.error(
                400, "invalid_request_error", "Missing required param: token.", "parameter_missing", param="token"
            )
        if amount is None or not 1 <= amount <= 99_999_999:
            return views.error(400, "invalid_request_error", "Invalid amount.", "parameter_invalid", param="amount")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            return views.error(400, "invalid_request_error", "Invalid currency.", "parameter_invalid", param="currency")
        if not isinstance(reference, str) or not 0 < len(reference) <= 64:
            return views.error(
                400, "invalid_request_error", "Invalid reference.", "parameter_invalid", param="reference"
            )
        url = data.get("notification_url")
        if url is not None and not (isinstance(url, str) and URL.match(url)):
            return views.error(
                400, "invalid_request_error", "Invalid notification_url.", "parameter_invalid", param="notification_url"
            )
        if not isinstance(data.get("capture", True), bool):
            return views.error(400, "invalid_request_error", "Invalid capture.", "parameter_invalid", param="capture")
        return None

    def _card_of(self, data: dict[str, Any]) -> dict[str, Any] | Result:
        """The card an authorization is for: a single-use token, or the card itself (reduced to brand + last 4)."""
        if isinstance(data.get("card"), dict):
            given = data["card"]
            number = re.sub(r"[ -]", "", str(given.get("number", "")))
            problem = self._card_problem(number, _int(given.get("exp_month")), _int(given.get("exp_year")))
            if problem is not None:
                return problem
            return {"brand": brand(number), "last4": number[-4:], "outcome": TEST_CARDS.get(number, "success")}
        card = self.store.token(data["token"])
        if card is None:
            return views.error(400, "invalid_request_error", f"No such token: '{data['token']}'", "resource_missing")
        if not self.store.use_token(card["id"]):
            return views.error(400, "invalid_request_error", "This token has already been used.", "token_already_used")
        return card

    def authorize(self, _request: web.Request, data: dict[str, Any]) -> Result:
        problem = self._authorize_problem(data)
        if problem is not None:
            return problem
        card = self._card_of(data)
        if isinstance(card, tuple):
            return card
        outcome = self.sim.misbehave.take_decline(self.name) or card["outcome"]
        created = now()
        values: dict[str, Any] = {
            "channel": self.name,
            "out_trade_no": data["reference"],
            "trade_no": "auth_" + token(24),
            "amount": data["amount"],
            "currency": data["currency"].lower(),
            "created_at": created,
            "notify_url": data.get("notification_url") or "",
            "extra": {
                "capture": data.get("capture", True),
                "brand": card["brand"],
                "last4": card["last4"],
                "description": str(data.get("description", ""))[:200],
            },
        }
        if outcome == "success":
            order = self.store.create_order(
                **values,
                status="paid",
                paid_at=created,
                paid_amount=data["amount"] if values["extra"]["capture"] else 0,
            )
            self.sim.emit(order, "paid")
            return 200, views.authorization(self, order)
        if outcome == "requires_action":
            order = self.store.create_order(**values, status="pending", pay_at=self.sim.pay_at())
            return 200, views.authorization(self, order)
        order = self.store.create_order(**values, status="failed", fail_code=outcome, closed_at=created)
        self.sim.emit(order, "failed")
        body = views.authorization(self, order)
        _status, err = views.error(402, "card_error", "Your card was declined.", "card_declined", decline_code=outcome)
        return 402, {**body, **err}

    def _find(self, request: web.Request) -> Order | None:
        return self.store.order_by_trade_no(self.name, request.match_info["id"])

    def get_authorization(self, request: web.Request, _data: dict[str, Any]) -> Result:
        order = self._find(request)
        if order is None:
            return views.error(404, "invalid_request_error", "No such authorization.", "resource_missing")
        return 200, views.authorization(self, order)

    def list_authorizations(self, request: web.Request, _data: dict[str, Any]) -> Result:
        reference = request.query.get("reference", "")
        if not reference:
            return views.error(400, "invalid_request_error", "Missing required param: reference.", "parameter_missing")
        orders = self.store.orders_by_out(self.name, reference, MAX_LIST)
        return 200, {"object": "list", "data": [views.authorization(self, o) for o in orders], "has_more": False}

    def capture(self, request: web.Request, data: dict[str, Any]) -> Result:
        order = self._find(request)
        if order is None:
            return views.error(404, "invalid_request_error", "No such authorization.", "resource_missing")
        if self.status_of(order) != "authorized":
            return views.error(
                400,
                "invalid_request_error",
                f"This authorization is {self.status_of(order)}.",
                "authorization_unexpected_state",
            )
        amount = _int(data.get("amount", order.amount))
        if amount is None or not 1 <= amount <= order.amount:
            return views.error(400, "invalid_request_error", "Invalid capture amount.", "amount_too_large")
        order = self.store.update_order(order, paid_amount=amount, paid_at=now())
        self.sim.emit(order, "captured")
        return 200, views.authorization(self, order)

    def void(self, request: web.Request, _data: dict[str, Any]) -> Result:
        order = self._find(request)
        if order is None:
            return views.error(404, "invalid_request_error", "No such authorization.", "resource_missing")
        state = self.status_of(order)
        if state not in ("authorized", "pending"):
            return views.error(
                400, "invalid_request_error", f"This authorization is {state}.", "authorization_unexpected_state"
            )
        order = self.store.update_order(order, status="closed", closed_at=now(), pay_at=None)
        if state == "authorized":
            self.sim.emit(order, "voided")
        return 200, views.authorization(self, order)

    def refund(self, _request: web.Request, data: dict[str, Any]) -> Result:
        order = self.store.order_by_trade_no(self.name, str(data.get("authorization", "")))
        if order is None:
            return views.error(404, "invalid_request_error", "No such authorization.", "resource_missing")
        if self.status_of(order) != "captured":
            return views.error(
                400,
                "invalid_request_error",
                "Only captured authorizations can be refunded.",
                "authorization_unexpected_state",
            )
        remaining = order.paid_amount - self.store.refunded(order.id)
        amount = _int(data.get("amount", remaining))
        if amount is None or amount < 1:
            return views.error(400, "invalid_request_error", "Invalid amount.", "parameter_invalid", param="amount")
        if amount > remaining:
            return views.error(
                400, "invalid_request_error", f"Refund amount exceeds the {remaining} remaining.", "amount_too_large"
            )
        if len(self.store.refunds_of(order.id, MAX_REFUNDS + 1)) >= MAX_REFUNDS:
            return views.error(400, "invalid_request_error", "Too many refunds.", "refund_limit_reached")
        url = data.get("notification_url") or order.notify_url
        refund_no = "re_" + token(24)
        reference = str(data.get("reference") or refund_no)[:64]
        item = self.sim.start_refund(
            order, reference, refund_no, amount, notify_url=str(url), extra={"reason": data.get("reason")}
        )
        return 200, views.refund(order, item)

    def list_refunds(self, request: web.Request, _data: dict[str, Any]) -> Result:
        """Refunds by the merchant's reference (its out_refund_no): how a merchant finds one whose answer it lost."""
        reference = request.query.get("reference", "")
        if not reference:
            return views.error(400, "invalid_request_error", "Missing required param: reference.", "parameter_missing")
        item = self.store.refund_by_out(self.name, reference)
        order = self.store.order(item.order_id) if item is not None else None
        data = [views.refund(order, item)] if item is not None and order is not None else []
        return 200, {"object": "list", "data": data, "has_more": False}

    def get_refund(self, request: web.Request, _data: dict[str, Any]) -> Result:
        item = self.store.refund_by_no(self.name, request.match_info["id"])
        order = self.store.order(item.order_id) if item is not None else None
        if item is None or order is None:
            return views.error(404, "invalid_request_error", "No such refund.", "resource_missing")
        return 200, views.refund(order, item)

    async def statement(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return views.reply(
                *views.error(401, "authentication_error", "Invalid API key provided.", "invalid_api_key")
            )
        day = parse_day(request.match_info["day"])
        if day is None:
            return views.reply(*views.error(400, "invalid_request_error", "Dates are YYYY-MM-DD.", "parameter_invalid"))
        _type, text = self.sim.statement(self.name, day)
        return web.Response(text=text, content_type="text/csv")

    async def not_found(self, _request: web.Request) -> web.Response:
        return views.reply(*views.error(404, "invalid_request_error", "Unrecognized request URL.", "resource_missing"))

    # engine hooks
    def status_of(self, order: Order) -> str:
        if order.status == "paid":
            return "captured" if order.paid_amount > 0 else "authorized"
        return {"pending": "pending", "failed": "declined"}.get(order.status, "voided")

    def paid_amount(self, order: Order) -> int:
        return order.amount if order.extra.get("capture", True) else 0

    def note(self, event: str, order: Order, refund: Refund | None, flags: set[str]) -> Note | None:
        made = views.event(self, event, order, refund, flags)
        if made is None:
            return None
        url, body = made
        return Note(url, body, "application/json")

    def send_headers(self, body: str, flags: list[str]) -> dict[str, str]:
        stamp = int(now())
        signature = hmac_hex(self.keys.card_webhook_secret, f"{stamp}.{body}".encode())
        if "forged" in flags:
            signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        return {"Card-Signature": f"t={stamp},v1={signature}"}

    def error_5xx(self) -> web.StreamResponse:
        return views.reply(*views.error(500, "api_error", "An unexpected error occurred (simulated)."))

    def render_statement(self, day: date, lines: list[Line]) -> tuple[str, str]:
        return "text/csv", bills.render_card(lines)
