"""A card processor with a Stripe-like JSON API, as a pure translator (see workers/channels/base.py).

A card reaches the processor one of two ways: the caller's checkout handed it to the processor and gives us a
token (`tok_...`), which is what we authorize; or the card is in Paygate's vault (docs/security.md, "Card and
personal data") and the order carries it, revealed here only, in the request body. Every call carries
`Authorization: Bearer <api key>`; the calls that move money carry an `Idempotency-Key` (our out_trade_no /
out_refund_no), so the processor answers a repeated call with the first call's result and the HTTP client may
retry them.

HTTP outcomes: 2xx carries the object; 402 a card decline; 400/422 a request the processor refused as invalid
(nothing was charged: FAILED with its message); 401/403 our key or account is wrong (ProviderAnswerError,
loudly: every call will fail until the configuration is fixed); 5xx, 409 (the same idempotency key still in
flight), 429 and anything else leave the outcome unknown (ProviderAnswerError: query later).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime
from urllib.parse import quote, urlencode

from workers.channels.base import (
    NOT_FOUND,
    AttemptStatus,
    HttpCall,
    HttpReply,
    Notification,
    Order,
    PaymentCard,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundOrder,
    RefundStatus,
    Scene,
    StatementLine,
)
from workers.channels.card import webhook
from workers.channels.card.config import CardConfig
from workers.channels.card.objects import authorization_state, decline_reason, refund_state, statement_lines
from workers.domain.cards import withhold_card_numbers
from workers.domain.types import Method

_INVALID = (400, 422)
# Void refused because the money was already captured: the payment stands (read_close answers SUCCEEDED).
_ALREADY_CAPTURED = frozenset({"already_captured", "authorization_captured"})
_JSON = "application/json"


def _card(card: PaymentCard) -> dict[str, object]:
    return {"number": card.number.reveal(), "exp_month": card.exp_month, "exp_year": card.exp_year}


class CardProvider:
    method = Method.CARD

    def __init__(self, config: CardConfig) -> None:
        self.config = config
        self.merchant_id = config.account_id

    # -- requests ---------------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        purpose: str,
        payload: Mapping[str, object] | None = None,
        key: str = "",
        accept: str = _JSON,
    ) -> HttpCall:
        headers = [("Authorization", f"Bearer {self.config.api_key}"), ("Accept", accept)]
        if key:
            headers.append(("Idempotency-Key", key))
        body = b""
        if payload is not None:
            headers.append(("Content-Type", _JSON))
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        # A GET changes nothing; a POST is safe to repeat only under an idempotency key.
        idempotent = method == "GET" or bool(key)
        return HttpCall(method, f"{self.config.base_url}{path}", tuple(headers), body, idempotent, purpose)

    def create(self, order: Order, now: datetime) -> HttpCall | ProviderState:
        if order.scene is not Scene.CARD:
            raise ValueError(f"the card processor takes scene card, not {order.scene.value}")
        if order.card is None and not order.payer.startswith("tok_"):
            # Refuse anything that is not a processor token, above all a card number (never logged: not quoted).
            raise ValueError("Order.payer must be the processor's card token (tok_...) or the card be given")
        if isinstance(order.amount_minor, bool) or not isinstance(order.amount_minor, int) or order.amount_minor <= 0:
            raise ValueError(f"amount must be a positive whole number of minor units, got {order.amount_minor!r}")
        if not (len(order.currency) == 3 and order.currency.isascii() and order.currency.isalpha()):
            raise ValueError(f"currency must be an ISO 4217 code, got {order.currency!r}")
        payload: dict[str, object] = {
            # A card from our vault goes as the card itself (the one place its number is revealed); a processor
            # token as the token.
            **({"card": _card(order.card)} if order.card is not None else {"token": order.payer}),
            "amount": order.amount_minor,
            "currency": order.currency.lower(),
            "capture": True,  # authorize and capture at once: a course is delivered immediately
            "reference": order.out_trade_no,
            "notification_url": order.notify_url or self.config.notify_url,
            "description": order.subject,
        }
        return self._call("POST", "/v1/authorizations", "create", payload, key=order.out_trade_no)

    def query(self, out_trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        return self._call("GET", f"/v1/authorizations?{urlencode({'reference': out_trade_no})}", "query")

    def close(self, out_trade_no: str, trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        """With the processor's id: void it. Without one the processor may never have received the order (or we
        lost its answer), and there is nothing to void by id: the close is then a query by reference, which
        read_close turns into CLOSED (not found, declined) or SUCCEEDED (captured)."""
        if not trade_no:
            return self._call("GET", f"/v1/authorizations?{urlencode({'reference': out_trade_no})}", "close")
        path = f"/v1/authorizations/{quote(trade_no, safe='')}/void"
        return self._call("POST", path, "close", {}, key=f"void-{trade_no}")

    def refund(self, order: RefundOrder, now: datetime) -> HttpCall:
        if not order.trade_no:
            raise ValueError("a card refund needs the authorization id (trade_no)")
        if order.amount_minor <= 0 or order.amount_minor > order.total_minor:
            raise ValueError(f"refund of {order.amount_minor} is outside 1..{order.total_minor}")
        payload = {
            "authorization": order.trade_no,
            "amount": order.amount_minor,
            "reason": order.reason,
            "reference": order.out_refund_no,
        }
        return self._call("POST", "/v1/refunds", "refund", payload, key=order.out_refund_no)

    def refund_query(self, order: RefundOrder, now: datetime) -> HttpCall:
        return self._call("GET", f"/v1/refunds?{urlencode({'reference': order.out_refund_no})}", "refund_query")

    def statement(self, day: date, now: datetime) -> HttpCall:
        return self._call("GET", f"/v1/statements/{day.isoformat()}", "statement", accept="text/csv")

    # -- answers ----------------------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        # The processor's own words go into exceptions and failure reasons; make sure our key never does, even
        # if an error page echoes the request.
        # A processor echoing a card number (ours in the request) must not put it in our logs either.
        # Withheld before the cut, so that a number across the cut cannot survive in part (19 digits with
        # separators span at most 37 characters: 364 keeps every number that starts before 300 whole).
        return withhold_card_numbers(text[:364].replace(self.config.api_key, "[redacted]"))[:300]

    def _json(self, reply: HttpReply) -> object:
        self._check_status(reply)
        try:
            return json.loads(reply.body)
        except (UnicodeDecodeError, ValueError) as error:
            raise ProviderAnswerError(f"the card processor's answer (HTTP {reply.status}) is not JSON") from error

    @staticmethod
    def _check_status(reply: HttpReply) -> None:
        if reply.status in (401, 403):
            raise ProviderAnswerError(
                f"the card processor refused our credentials (HTTP {reply.status}): check the configured API key "
                "and account"
            )
        if reply.status >= 500:
            raise ProviderAnswerError(f"the card processor failed (HTTP {reply.status}); the outcome is unknown")

    def _error(self, data: object) -> Mapping[str, object]:
        if isinstance(data, Mapping):
            inner = data.get("error")
            return inner if isinstance(inner, Mapping) else data
        return {}

    def _message(self, data: object) -> str:
        message = self._error(data).get("message")
        return self._clean(message) if isinstance(message, str) and message else "the request was refused"

    def _unexpected(self, reply: HttpReply, data: object) -> ProviderAnswerError:
        return ProviderAnswerError(f"the card processor answered HTTP {reply.status}: {self._message(data)}")

    def _single(self, reply: HttpReply) -> Mapping[str, object] | None:
        """The one object of a list answer ({"data": [...]} or [...]); None when the list is empty."""
        data = self._json(reply)
        if reply.status != 200:
            raise self._unexpected(reply, data)
        items = data.get("data") if isinstance(data, Mapping) else data
        if not isinstance(items, list):
            raise ProviderAnswerError("the card processor's list answer holds no list")
        if len(items) > 1:
            # One reference is one idempotency key: two objects for it is an anomaly for a human, not a guess.
            raise ProviderAnswerError(f"the card processor holds {len(items)} objects for one reference")
        if items and not isinstance(items[0], Mapping):
            raise ProviderAnswerError("the card processor's list holds something other than an object")
        return items[0] if items else None

    def read_create(self, order: Order, reply: HttpReply) -> ProviderState:
        data = self._json(reply)
        if reply.status in (200, 201):
            return authorization_state(data, order.out_trade_no)
        if reply.status == 402:
            if isinstance(data, Mapping) and "status" in data:  # the declined authorization itself
                return authorization_state(data, order.out_trade_no)
            error = self._error(data)
            auth = error.get("authorization")
            return ProviderState(
                AttemptStatus.FAILED,
                order.out_trade_no,
                trade_no=auth if isinstance(auth, str) else "",
                failure_reason=decline_reason(error.get("decline_code")),
            )
        if reply.status in _INVALID:
            return ProviderState(AttemptStatus.FAILED, order.out_trade_no, failure_reason=self._message(data))
        raise self._unexpected(reply, data)

    def read_query(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        obj = self._single(reply)
        if obj is None:
            return ProviderState(AttemptStatus.FAILED, out_trade_no, failure_reason=NOT_FOUND)
        return authorization_state(obj, out_trade_no)

    def read_close(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        """CLOSED: voided, declined or never received; SUCCEEDED: captured (a void cannot undo a capture: that
        takes a refund); PENDING: still in the processor's hands."""
        data = self._json(reply)
        if reply.status == 200 and (isinstance(data, list) or (isinstance(data, Mapping) and "data" in data)):
            state = self.read_query(out_trade_no, reply)  # close without an id was a query
        elif reply.status == 200:
            state = authorization_state(data, out_trade_no)
        elif reply.status in (400, 409) and self._error(data).get("code") in _ALREADY_CAPTURED:
            auth = self._error(data).get("authorization")
            if isinstance(auth, Mapping):
                return authorization_state(auth, out_trade_no)
            return ProviderState(AttemptStatus.SUCCEEDED, out_trade_no, trade_no=auth if isinstance(auth, str) else "")
        else:
            raise self._unexpected(reply, data)
        if state.status is AttemptStatus.FAILED:
            return replace(state, status=AttemptStatus.CLOSED)
        return state

    def read_refund(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        data = self._json(reply)
        if reply.status in (200, 201):
            return refund_state(data, order.out_refund_no, self.config.account_id)
        if reply.status in _INVALID:
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=self._message(data))
        raise self._unexpected(reply, data)

    def read_refund_query(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        obj = self._single(reply)
        if obj is None:
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=NOT_FOUND)
        return refund_state(obj, order.out_refund_no, self.config.account_id)

    def read_statement(self, day: date, reply: HttpReply, now: datetime) -> HttpCall | list[StatementLine]:
        if reply.status != 200:
            self._check_status(reply)  # 401/403/5xx get their own messages
            raise ProviderAnswerError(f"no card statement for {day} (HTTP {reply.status}); try again later")
        try:
            text = reply.body.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ProviderAnswerError("the card statement is not UTF-8 text") from error
        return statement_lines(text)

    # -- webhooks ---------------------------------------------------------------------------------------------

    def read_notification(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Notification:
        webhook.verify(headers, body, self.config.webhook_secret, now)
        return webhook.read_event(body, self.config.account_id)

    def acknowledge(self, accepted: bool) -> HttpReply:
        # 2xx stops the processor's retries; 400 makes it retry with backoff (and flag the endpoint if it persists).
        body = json.dumps({"received": accepted}, separators=(",", ":")).encode()
        return HttpReply(200 if accepted else 400, {"content-type": _JSON}, body)
