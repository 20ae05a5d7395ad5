"""WeChat Pay API v3 (direct merchant) as a pure translator: see workers/channels/base.py.

Scenes: QR is Native (`code_url` to show as a QR code); IN_APP is JSAPI (`prepay_id`, needs the payer's openid in
Order.payer). PAGE and WAP also use Native: a desktop page shows the QR code, and H5 pay (the mobile-browser product)
needs a separately approved domain and the payer's IP, which an Order does not carry. CARD is not WeChat's.

How answers map:

- every answer we act on must carry a valid platform signature (Wechatpay-Serial = the configured serial); 2xx
  without one, 401 (our signature refused), 429 (rate limited), 5xx (SYSTEM_ERROR) and any code not listed below:
  ProviderAnswerError, the outcome stays unknown and a later query tells.
- create: PARAM_ERROR, INVALID_REQUEST, NO_AUTH and the like are FAILED; ORDER_CLOSED is CLOSED; ORDERPAID is left
  to a query (which states the amount).
- query: trade_state SUCCESS/REFUND are SUCCEEDED, NOTPAY/USERPAYING PENDING, CLOSED/REVOKED CLOSED, PAYERROR
  FAILED; 404 ORDER_NOT_EXIST is FAILED "not found".
- close: 204 and ORDER_CLOSED are CLOSED, ORDER_NOT_EXIST too (nothing to pay any more); ORDERPAID is SUCCEEDED.
- refund and refund query: status SUCCESS/PROCESSING/ABNORMAL/CLOSED is SUCCEEDED/PENDING/FAILED/FAILED; refusals
  (NOT_ENOUGH, INVALID_REQUEST …) are FAILED; the refund query's 404 RESOURCE_NOT_EXISTS is FAILED "not found".
- statement: the tradebill answer gives a download_url under the API root, fetched with a signed GET; WeChat does
  not sign the file itself. NO_STATEMENT_EXIST (no business that day) is an empty statement once the bill is due.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from workers.channels.base import (
    NOT_FOUND,
    AttemptStatus,
    HttpCall,
    HttpReply,
    Notification,
    NotificationRejected,
    Order,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundOrder,
    RefundStatus,
    Scene,
    StatementLine,
)
from workers.channels.wechat_pay import bill, signature
from workers.channels.wechat_pay.answers import notification, parse_json, refund_of, transaction
from workers.channels.wechat_pay.bill import CHINA
from workers.channels.wechat_pay.config import WechatPayConfig
from workers.domain.types import Method

USER_AGENT = "paygate/0.1"  # API v3 refuses requests without a User-Agent
CALLBACK_WINDOW = timedelta(seconds=300)
_PAID = ("ORDERPAID", "ORDER_PAID")  # the documentation has used both spellings
_REFUSED = ("PARAM_ERROR", "INVALID_REQUEST", "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS", "NO_AUTH")
_CREATE_REFUSED = (*_REFUSED, "OUT_TRADE_NO_USED", "RULE_LIMIT", "TRADE_ERROR")
_REFUND_REFUSED = (*_REFUSED, "NOT_ENOUGH", "USER_ACCOUNT_ABNORMAL", "RESOURCE_NOT_EXISTS")
_REFUSAL_STATUSES = (400, 403, 404)
# WeChat builds the day's bill from 09:00 the next day (Beijing); before 10:00 "no bill" may mean "not yet".
_BILL_READY = timedelta(days=1, hours=10)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # naive means UTC, as in the store


class WechatPayProvider:
    method = Method.WECHAT_PAY

    def __init__(self, config: WechatPayConfig) -> None:
        self._config = config
        self.merchant_id = config.mchid

    # ---- building calls -------------------------------------------------------------------------------------

    def _signed(self, method: str, url: str, body: bytes, now: datetime, purpose: str) -> HttpCall:
        config = self._config
        auth = signature.authorization(
            mchid=config.mchid,
            serial_no=config.merchant_serial_no,
            key=config.merchant_private_key,
            method=method,
            canonical=signature.canonical_url(config.base_url, url),
            body=body,
            timestamp=str(int(_utc(now).timestamp())),
            nonce=signature.new_nonce(),
        )
        headers: tuple[tuple[str, str], ...] = (
            ("Authorization", auth),
            ("Accept", "application/json"),
            ("User-Agent", USER_AGENT),
        )
        if body:
            headers += (("Content-Type", "application/json"),)
        # Every call here is safe to repeat: queries, close, and creates/refunds WeChat deduplicates by
        # out_trade_no / out_refund_no (the same body gives the same answer).
        return HttpCall(method, url, headers, body, True, purpose)

    def _api(self, method: str, path: str, payload: Mapping[str, Any] | None, now: datetime, purpose: str) -> HttpCall:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return self._signed(method, self._config.base_url + path, body, now, purpose)

    def create(self, order: Order, now: datetime) -> HttpCall | ProviderState:
        if order.currency != "CNY" or isinstance(order.amount_minor, bool) or order.amount_minor <= 0:
            raise ValueError(f"WeChat Pay takes a positive CNY amount, not {order.amount_minor} {order.currency}")
        payload: dict[str, Any] = {
            "appid": self._config.appid,
            "mchid": self._config.mchid,
            "description": order.subject,
            "out_trade_no": order.out_trade_no,
            "time_expire": _utc(order.expires_at).astimezone(CHINA).isoformat(timespec="seconds"),
            "notify_url": order.notify_url or self._config.notify_url,
            "amount": {"total": order.amount_minor, "currency": order.currency},
        }
        if order.scene is Scene.IN_APP:
            if not order.payer:
                raise ValueError("WeChat JSAPI needs the payer's openid in Order.payer")
            payload["payer"] = {"openid": order.payer}
            return self._api("POST", "/v3/pay/transactions/jsapi", payload, now, "create")
        if order.scene not in (Scene.QR, Scene.PAGE, Scene.WAP):
            raise ValueError(f"WeChat Pay does not serve the {order.scene} scene")
        return self._api("POST", "/v3/pay/transactions/native", payload, now, "create")

    def query(self, out_trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}?mchid={quote(self._config.mchid)}"
        return self._api("GET", path, None, now, "query")

    def close(self, out_trade_no: str, trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close"
        return self._api("POST", path, {"mchid": self._config.mchid}, now, "close")

    def refund(self, order: RefundOrder, now: datetime) -> HttpCall:
        if order.currency != "CNY":
            raise ValueError(f"WeChat Pay (domestic) refunds CNY only, not {order.currency}")
        payload = {
            "out_trade_no": order.out_trade_no,
            "out_refund_no": order.out_refund_no,
            "reason": order.reason,
            "notify_url": order.notify_url or self._config.notify_url,
            "amount": {"refund": order.amount_minor, "total": order.total_minor, "currency": order.currency},
        }
        return self._api("POST", "/v3/refund/domestic/refunds", payload, now, "refund")

    def refund_query(self, order: RefundOrder, now: datetime) -> HttpCall:
        path = f"/v3/refund/domestic/refunds/{quote(order.out_refund_no, safe='')}"
        return self._api("GET", path, None, now, "refund_query")

    def statement(self, day: date, now: datetime) -> HttpCall:
        return self._api("GET", f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type=ALL", None, now, "statement")

    # ---- reading answers ------------------------------------------------------------------------------------

    def _signature_problem(self, headers: Mapping[str, str], body: bytes) -> tuple[str, str] | None:
        """(reason, message) when the platform signature is missing or wrong; None when it verifies."""
        lower = {name.lower(): value for name, value in headers.items()}
        if lower.get("wechatpay-serial") != self._config.platform_serial:
            return "unknown_serial", f"signed with serial {lower.get('wechatpay-serial')!r}"
        timestamp, nonce = lower.get("wechatpay-timestamp", ""), lower.get("wechatpay-nonce", "")
        sign, kind = lower.get("wechatpay-signature", ""), lower.get("wechatpay-signature-type", signature.SCHEME)
        if not (sign and timestamp and nonce) or kind != signature.SCHEME:
            return "bad_signature", "no WECHATPAY2-SHA256-RSA2048 signature with its timestamp and nonce"
        message = signature.answer_message(timestamp, nonce, body)
        if not signature.rsa_verify(self._config.platform_public_key, message, sign):
            return "bad_signature", "the signature does not verify"
        return None

    def _answer(self, reply: HttpReply, what: str, codes: Collection[str] = ()) -> tuple[dict[str, Any], str]:
        """The verified JSON of a 2xx answer and "", or of a listed business refusal and its code."""
        if 200 <= reply.status < 300:
            refusal = ""
        elif reply.status in _REFUSAL_STATUSES:
            refusal = str(parse_json(reply.body, what).get("code", ""))
            if refusal not in codes:
                raise ProviderAnswerError(f"WeChat Pay {what}: HTTP {reply.status} {refusal}")
        else:
            raise ProviderAnswerError(f"WeChat Pay {what}: HTTP {reply.status}")
        problem = self._signature_problem(reply.headers, reply.body)
        if problem:
            raise ProviderAnswerError(f"WeChat Pay {what}: {problem[1]}")
        return ({} if reply.status == 204 else parse_json(reply.body, what)), refusal

    def read_create(self, order: Order, reply: HttpReply) -> ProviderState:
        payload, refusal = self._answer(reply, "create", (*_CREATE_REFUSED, "ORDER_CLOSED", *_PAID))
        if refusal in _PAID:
            raise ProviderAnswerError("WeChat Pay: the order is paid already; a query will state it")
        if refusal == "ORDER_CLOSED":
            return ProviderState(AttemptStatus.CLOSED, order.out_trade_no, merchant_id=self._config.mchid)
        if refusal:
            reason = f"{refusal}: {payload.get('message', '')}"
            return ProviderState(AttemptStatus.FAILED, order.out_trade_no, failure_reason=reason)
        field = "prepay_id" if order.scene is Scene.IN_APP else "code_url"
        value = payload.get(field)
        if not isinstance(value, str) or not value:
            raise ProviderAnswerError(f"WeChat Pay create: no {field} in a successful answer")
        if order.scene is Scene.IN_APP:
            return ProviderState(
                AttemptStatus.PENDING, order.out_trade_no, merchant_id=self.merchant_id, prepay_id=value
            )
        return ProviderState(AttemptStatus.PENDING, order.out_trade_no, merchant_id=self.merchant_id, qr_code=value)

    def read_query(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        payload, refusal = self._answer(reply, "query", ("ORDER_NOT_EXIST",))
        if refusal:
            return ProviderState(AttemptStatus.FAILED, out_trade_no, failure_reason=NOT_FOUND)
        try:
            return transaction(payload, out_trade_no)
        except ValueError as exc:
            raise ProviderAnswerError(f"WeChat Pay query: {exc}") from exc

    def read_close(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        _, refusal = self._answer(reply, "close", ("ORDER_CLOSED", "ORDER_NOT_EXIST", *_PAID))
        status = AttemptStatus.SUCCEEDED if refusal in _PAID else AttemptStatus.CLOSED
        return ProviderState(status, out_trade_no, merchant_id=self._config.mchid)

    def read_refund(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        return self._read_refund(order, reply, "refund", _REFUND_REFUSED)

    def read_refund_query(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        return self._read_refund(order, reply, "refund query", ("RESOURCE_NOT_EXISTS",))

    def _read_refund(self, order: RefundOrder, reply: HttpReply, what: str, codes: tuple[str, ...]) -> ProviderRefund:
        payload, refusal = self._answer(reply, what, codes)
        if refusal:
            reason = NOT_FOUND if what == "refund query" else f"{refusal}: {payload.get('message', '')}"
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=reason)
        try:
            refund, out_trade_no = refund_of(payload)
        except ValueError as exc:
            raise ProviderAnswerError(f"WeChat Pay {what}: {exc}") from exc
        if refund.out_refund_no != order.out_refund_no or out_trade_no not in ("", order.out_trade_no):
            raise ProviderAnswerError(f"WeChat Pay {what}: answered about {refund.out_refund_no}/{out_trade_no}")
        return refund

    def read_statement(
        self, day: date, reply: HttpReply, now: datetime, *, expected_sha1: str = ""
    ) -> HttpCall | list[StatementLine]:
        """The download call for the tradebill answer, or the lines of the downloaded file. The file is unsigned:
        its hash_value (SHA-1) comes with the tradebill answer, which a stateless reader no longer has when the file
        arrives, so it is checked only when the caller passes it as `expected_sha1`; the summary's line count is
        always checked, which catches a truncated download."""
        if not reply.body.lstrip().startswith(b"{"):
            if reply.status != 200:
                raise ProviderAnswerError(f"WeChat Pay bill download: HTTP {reply.status}")
            # SHA-1 is WeChat's choice of integrity check for the file, not ours; it protects against nothing forged.
            digest = hashlib.sha1(reply.body, usedforsecurity=False).hexdigest()
            if expected_sha1 and digest != expected_sha1.lower():
                raise ProviderAnswerError("WeChat Pay bill download: the file's SHA-1 is not the announced one")
            return bill.parse(reply.body)
        payload, refusal = self._answer(reply, "tradebill", ("NO_STATEMENT_EXIST",))
        if refusal:
            ready = datetime(day.year, day.month, day.day, tzinfo=CHINA) + _BILL_READY
            if _utc(now) < ready:
                raise ProviderAnswerError(f"WeChat Pay: the bill of {day} is not due before {ready.isoformat()}")
            return []
        url, hash_type, hash_value = (payload.get(k) for k in ("download_url", "hash_type", "hash_value"))
        if not isinstance(url, str) or hash_type != "SHA1" or not isinstance(hash_value, str) or not hash_value:
            raise ProviderAnswerError(f"WeChat Pay tradebill: unexpected answer {sorted(payload)}")
        try:
            return self._signed("GET", url, b"", now, "statement")
        except ValueError as exc:  # a download_url outside the API root: our signature does not go there
            raise ProviderAnswerError(f"WeChat Pay tradebill: {exc}") from exc

    # ---- notifications --------------------------------------------------------------------------------------

    def read_notification(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Notification:
        problem = self._signature_problem(headers, body)
        if problem:
            raise NotificationRejected(*problem)
        lower = {name.lower(): value for name, value in headers.items()}
        timestamp, nonce = lower["wechatpay-timestamp"], lower["wechatpay-nonce"]
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise NotificationRejected("malformed", f"Wechatpay-Timestamp {timestamp!r}")
        sent = datetime.fromtimestamp(int(timestamp), UTC)
        if abs(_utc(now) - sent) > CALLBACK_WINDOW:
            raise NotificationRejected("stale_timestamp", f"sent at {sent.isoformat()}, now {now.isoformat()}")
        try:
            envelope = parse_json(body, "callback")
            event, resource = envelope.get("event_type"), envelope.get("resource")
            if not isinstance(envelope.get("id"), str) or not envelope["id"] or not isinstance(resource, dict):
                raise ValueError("no id or resource")
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise ValueError(f"algorithm {resource.get('algorithm')!r}")
            nonce_, associated, ciphertext = (resource.get(k) for k in ("nonce", "associated_data", "ciphertext"))
            if not (isinstance(nonce_, str) and isinstance(associated, str) and isinstance(ciphertext, str)):
                raise ValueError("resource without nonce, associated_data or ciphertext")
        except (ProviderAnswerError, ValueError) as exc:
            raise NotificationRejected("malformed", f"WeChat Pay callback: {exc}") from exc
        try:
            plaintext = signature.decrypt(self._config.apiv3_key, nonce_, associated, ciphertext)
        except ValueError as exc:
            raise NotificationRejected("decrypt_failed", f"WeChat Pay callback: {exc}") from exc
        try:
            return notification(envelope["id"], nonce, event, parse_json(plaintext, "resource"))
        except (ProviderAnswerError, ValueError) as exc:
            raise NotificationRejected("malformed", f"WeChat Pay callback: {exc}") from exc

    def acknowledge(self, accepted: bool) -> HttpReply:
        if accepted:
            return HttpReply(204, {}, b"")  # v3: any 2xx stops the retries; 204 needs no body
        body = json.dumps({"code": "FAIL", "message": "rejected"}).encode()
        return HttpReply(500, {"content-type": "application/json"}, body)
