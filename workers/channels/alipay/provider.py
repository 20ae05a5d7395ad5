"""Alipay openapi (gateway.do, RSA2) as a pure translator: see workers/channels/base.py.

Every call is a form POST to the gateway carrying the common parameters (app_id, method, format, charset,
sign_type, timestamp, version, [notify_url], biz_content) and their `sign`, all in the body with the charset named in
the Content-Type. The desktop and mobile web payments (page.pay, wap.pay) need no call from us: the payer's browser
is sent to the gateway with the same signed parameters in the query string.

How answers map (`code` 10000 is success; 40004 is a business refusal named by `sub_code`):

- an answer that is not HTTP 200, not JSON, not signed or not verifiable, `code` 20000 (service unavailable), a
  `sub_code` of isp.* or ACQ.SYSTEM_ERROR: ProviderAnswerError; the outcome stays unknown and a later query tells.
- create: a refusal (40001/40002/40004/40006 + sub_code) is FAILED; ACQ.TRADE_HAS_CLOSE is CLOSED; a trade that
  turns out paid already (ACQ.TRADE_HAS_SUCCESS) is left to a query, which also states the amount.
- query: ACQ.TRADE_NOT_EXIST is FAILED "not found" (base.py). NB Alipay creates a precreate or page.pay trade only
  when the payer scans or logs in, so until `expires_at` "not found" means "not scanned yet" as well. TRADE_CLOSED
  is CLOSED, but Alipay also reports a paid trade refunded in full as TRADE_CLOSED: a query never overrules a
  payment already known to have succeeded.
- close: ACQ.TRADE_NOT_EXIST and ACQ.TRADE_HAS_CLOSE are CLOSED (nothing can be paid any more); ACQ.TRADE_HAS_SUCCESS
  is SUCCEEDED. ACQ.TRADE_STATUS_ERROR only says the trade is no longer waiting for payment: paid, or already
  closed (a retried close whose first answer was lost gets it too), so it is left to a query, never read as paid.
- refund: `fund_change` Y is SUCCEEDED, N PENDING (a repeated request answers N; the refund query settles it).
- refund query: `refund_status` REFUND_SUCCESS is SUCCEEDED; no refund_status (Alipay: "not received, or failed")
  and ACQ.TRADE_NOT_EXIST are FAILED "not found"; any other refund_status is PENDING.

Synchronous answers do not name the app; they answer a request signed under our app_id and are signed by Alipay,
so their `merchant_id` is our app_id. Notifications name theirs, and that is what they carry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from workers.channels.alipay import bill, signature
from workers.channels.alipay.config import AlipayConfig
from workers.channels.alipay.money import CHINA, china_time, parse_china_time, parse_yuan, to_yuan
from workers.channels.base import (
    NOT_FOUND,
    AttemptStatus,
    HttpCall,
    HttpReply,
    Notification,
    NotificationKind,
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
from workers.domain.types import Method

_FORM = "application/x-www-form-urlencoded;charset=utf-8"
_PRODUCT_CODES = {Scene.QR: "FACE_TO_FACE_PAYMENT", Scene.PAGE: "FAST_INSTANT_TRADE_PAY", Scene.WAP: "QUICK_WAP_WAY"}
_CREATE_METHODS = {Scene.QR: "alipay.trade.precreate", Scene.PAGE: "alipay.trade.page.pay"}
_CREATE_METHODS[Scene.WAP] = "alipay.trade.wap.pay"
_TRADE_STATUS = {
    "WAIT_BUYER_PAY": AttemptStatus.PENDING,
    "TRADE_SUCCESS": AttemptStatus.SUCCEEDED,
    "TRADE_FINISHED": AttemptStatus.SUCCEEDED,  # paid, and past the refund window
    "TRADE_CLOSED": AttemptStatus.CLOSED,  # unpaid and closed, or paid and fully refunded (a refund notification)
}
_REFUSALS = ("40001", "40002", "40004", "40006")  # missing/invalid arguments, business refusal, no permission
_TRANSIENT = ("ACQ.SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR")
_ISP_ANSWERS = ("isp.bill_not_exist",)  # isp.* is Alipay's side failing, except this plain "there is no bill"
_NOTIFY_REQUIRED = ("notify_id", "app_id", "out_trade_no", "trade_status", "total_amount")
# Alipay builds the day's bill by about 09:00 the next day (Beijing); before that "no bill" means "not yet".
_BILL_READY = timedelta(days=1, hours=10)


class AlipayProvider:
    method = Method.ALIPAY

    def __init__(self, config: AlipayConfig) -> None:
        self._config = config
        self.merchant_id = config.app_id

    # ---- building calls -------------------------------------------------------------------------------------

    def _params(self, api_method: str, biz: Mapping[str, Any], now: datetime, notify_url: str = "") -> dict[str, str]:
        params = {
            "app_id": self._config.app_id,
            "method": api_method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": china_time(now),
            "version": "1.0",
            "biz_content": json.dumps(biz, separators=(",", ":"), ensure_ascii=False),
        }
        if notify_url:  # a common parameter, but Alipay only acts on it for calls that open a trade
            params["notify_url"] = notify_url
        return signature.sign_params(params, self._config.app_private_key)

    def _call(
        self, api_method: str, biz: Mapping[str, Any], now: datetime, purpose: str, notify_url: str = ""
    ) -> HttpCall:
        body = urlencode(self._params(api_method, biz, now, notify_url)).encode("ascii")
        # Every Alipay call we make is safe to repeat: queries, close, and creates/refunds deduplicated by
        # out_trade_no / out_request_no.
        return HttpCall("POST", self._config.gateway_url, (("Content-Type", _FORM),), body, True, purpose)

    def create(self, order: Order, now: datetime) -> HttpCall | ProviderState:
        if order.scene not in _PRODUCT_CODES:
            raise ValueError(f"Alipay serves the QR, PAGE and WAP scenes, not {order.scene}")
        if order.currency != "CNY":
            raise ValueError(f"Alipay (domestic) takes CNY only, not {order.currency}")
        biz = {
            "out_trade_no": order.out_trade_no,
            "total_amount": to_yuan(order.amount_minor),
            "subject": order.subject,
            "product_code": _PRODUCT_CODES[order.scene],
            "time_expire": china_time(order.expires_at),
        }
        notify_url = order.notify_url or self._config.notify_url
        api_method = _CREATE_METHODS[order.scene]
        if order.scene is Scene.QR:
            return self._call(api_method, biz, now, "create", notify_url)
        pay_url = self._config.gateway_url + "?" + urlencode(self._params(api_method, biz, now, notify_url))
        return ProviderState(
            AttemptStatus.PENDING, order.out_trade_no, merchant_id=self._config.app_id, pay_url=pay_url
        )

    def query(self, out_trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        return self._call("alipay.trade.query", {"out_trade_no": out_trade_no}, now, "query")

    def close(self, out_trade_no: str, trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        biz = {"out_trade_no": out_trade_no} | ({"trade_no": trade_no} if trade_no else {})
        return self._call("alipay.trade.close", biz, now, "close")

    def refund(self, order: RefundOrder, now: datetime) -> HttpCall:
        if order.currency != "CNY":
            raise ValueError(f"Alipay (domestic) refunds CNY only, not {order.currency}")
        biz = {
            "out_trade_no": order.out_trade_no,
            "refund_amount": to_yuan(order.amount_minor),
            "out_request_no": order.out_refund_no,  # Alipay deduplicates refunds on it
            "refund_reason": order.reason,
        }
        return self._call("alipay.trade.refund", biz | self._trade_no(order), now, "refund")

    def refund_query(self, order: RefundOrder, now: datetime) -> HttpCall:
        biz = {"out_trade_no": order.out_trade_no, "out_request_no": order.out_refund_no}
        return self._call("alipay.trade.fastpay.refund.query", biz | self._trade_no(order), now, "refund_query")

    def statement(self, day: date, now: datetime) -> HttpCall:
        biz = {"bill_type": "trade", "bill_date": day.isoformat()}
        return self._call("alipay.data.dataservice.bill.downloadurl.query", biz, now, "statement")

    @staticmethod
    def _trade_no(order: RefundOrder) -> dict[str, str]:
        return {"trade_no": order.trade_no} if order.trade_no else {}

    # ---- reading answers ------------------------------------------------------------------------------------

    def _answer(self, reply: HttpReply, api_method: str) -> tuple[dict[str, Any], str]:
        """The verified `*_response` object and "" on success, or its sub_code for a business refusal."""
        if reply.status != 200:
            raise ProviderAnswerError(f"Alipay {api_method}: HTTP {reply.status}")
        try:
            raw, sign = signature.signed_response(reply.body.decode("utf-8"), api_method)
            content = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProviderAnswerError(f"Alipay {api_method}: unreadable answer: {exc}") from exc
        if not signature.rsa2_verify(self._config.alipay_public_key, raw, sign):
            raise ProviderAnswerError(f"Alipay {api_method}: the answer's signature does not verify")
        if not isinstance(content, dict):
            raise ProviderAnswerError(f"Alipay {api_method}: the answer is not an object")
        code, sub_code = str(content.get("code", "")), str(content.get("sub_code", ""))
        if code == "10000":
            return content, ""
        transient = sub_code in _TRANSIENT or (sub_code.startswith("isp.") and sub_code not in _ISP_ANSWERS)
        if code == "20000" or transient:
            raise ProviderAnswerError(f"Alipay {api_method}: unavailable ({code} {sub_code})")
        if code not in _REFUSALS:
            raise ProviderAnswerError(f"Alipay {api_method}: unexpected code {code} {sub_code}")
        return content, sub_code or code

    @staticmethod
    def _reason(content: Mapping[str, Any], refusal: str) -> str:
        message = content.get("sub_msg") or content.get("msg") or ""
        return f"{refusal}: {message}" if message else refusal

    @staticmethod
    def _same_trade(content: Mapping[str, Any], out_trade_no: str) -> None:
        stated = content.get("out_trade_no")
        if stated not in (None, "", out_trade_no):
            raise ProviderAnswerError(f"Alipay answered about {stated!r}, not {out_trade_no!r}")

    def _amount(self, content: Mapping[str, Any], name: str) -> int | None:
        if content.get(name) in (None, ""):
            return None
        try:
            return parse_yuan(content[name])
        except ValueError as exc:
            raise ProviderAnswerError(f"Alipay: {name}: {exc}") from exc

    def read_create(self, order: Order, reply: HttpReply) -> ProviderState:
        content, refusal = self._answer(reply, "alipay.trade.precreate")
        if refusal == "ACQ.TRADE_HAS_CLOSE":
            return ProviderState(AttemptStatus.CLOSED, order.out_trade_no, merchant_id=self._config.app_id)
        if refusal == "ACQ.TRADE_HAS_SUCCESS":
            raise ProviderAnswerError("Alipay: the trade is paid already; a query will state it")
        if refusal:
            reason = self._reason(content, refusal)
            return ProviderState(AttemptStatus.FAILED, order.out_trade_no, failure_reason=reason)
        self._same_trade(content, order.out_trade_no)
        qr_code = content.get("qr_code")
        if not isinstance(qr_code, str) or not qr_code:
            raise ProviderAnswerError("Alipay precreate: no qr_code in a successful answer")
        return ProviderState(
            AttemptStatus.PENDING, order.out_trade_no, merchant_id=self._config.app_id, qr_code=qr_code
        )

    def read_query(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        content, refusal = self._answer(reply, "alipay.trade.query")
        if refusal == "ACQ.TRADE_NOT_EXIST":
            return ProviderState(AttemptStatus.FAILED, out_trade_no, failure_reason=NOT_FOUND)
        if refusal:
            raise ProviderAnswerError(f"Alipay query refused: {self._reason(content, refusal)}")
        self._same_trade(content, out_trade_no)
        status = _TRADE_STATUS.get(content.get("trade_status", ""))
        if status is None:
            raise ProviderAnswerError(f"Alipay query: unknown trade_status {content.get('trade_status')!r}")
        paid_at = None
        if status is AttemptStatus.SUCCEEDED and content.get("send_pay_date"):
            try:
                paid_at = parse_china_time(content["send_pay_date"])
            except ValueError as exc:
                raise ProviderAnswerError(f"Alipay query: send_pay_date: {exc}") from exc
        return ProviderState(
            status,
            out_trade_no,
            trade_no=str(content.get("trade_no", "")),
            amount_minor=self._amount(content, "total_amount"),
            currency="CNY",
            merchant_id=self._config.app_id,
            paid_at=paid_at,
        )

    def read_close(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        content, refusal = self._answer(reply, "alipay.trade.close")
        trade_no = str(content.get("trade_no", ""))
        if refusal in ("", "ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_HAS_CLOSE"):
            self._same_trade(content, out_trade_no)
            return ProviderState(AttemptStatus.CLOSED, out_trade_no, trade_no, merchant_id=self._config.app_id)
        if refusal in ("ACQ.TRADE_HAS_SUCCESS", "ACQ.TRADE_HAS_FINISHED"):
            return ProviderState(AttemptStatus.SUCCEEDED, out_trade_no, trade_no, merchant_id=self._config.app_id)
        raise ProviderAnswerError(f"Alipay close refused, state unknown: {self._reason(content, refusal)}")

    def read_refund(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        content, refusal = self._answer(reply, "alipay.trade.refund")
        if refusal:
            reason = self._reason(content, refusal)
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=reason)
        self._same_trade(content, order.out_trade_no)
        # refund_fee in this answer is the trade's total refunded so far, not this refund's amount: not stated.
        status = RefundStatus.SUCCEEDED if content.get("fund_change") == "Y" else RefundStatus.PENDING
        return ProviderRefund(status, order.out_refund_no, currency="CNY", merchant_id=self._config.app_id)

    def read_refund_query(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        content, refusal = self._answer(reply, "alipay.trade.fastpay.refund.query")
        if refusal == "ACQ.TRADE_NOT_EXIST":
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=NOT_FOUND)
        if refusal:
            raise ProviderAnswerError(f"Alipay refund query refused: {self._reason(content, refusal)}")
        self._same_trade(content, order.out_trade_no)
        if content.get("out_request_no") not in (None, "", order.out_refund_no):
            raise ProviderAnswerError(f"Alipay answered about refund {content.get('out_request_no')!r}")
        refund_status = content.get("refund_status") or ""
        if not refund_status:
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=NOT_FOUND)
        status = RefundStatus.SUCCEEDED if refund_status == "REFUND_SUCCESS" else RefundStatus.PENDING
        amount = self._amount(content, "refund_amount")
        return ProviderRefund(
            status, order.out_refund_no, amount_minor=amount, currency="CNY", merchant_id=self.merchant_id
        )

    def read_statement(self, day: date, reply: HttpReply, now: datetime) -> HttpCall | list[StatementLine]:
        if not reply.body.lstrip().startswith(b"{"):  # not the gateway's JSON answer: the bill file itself
            if reply.status != 200:
                raise ProviderAnswerError(f"Alipay bill download: HTTP {reply.status}")
            return bill.parse(reply.body)
        content, refusal = self._answer(reply, "alipay.data.dataservice.bill.downloadurl.query")
        if refusal in _ISP_ANSWERS:
            ready = datetime(day.year, day.month, day.day, tzinfo=CHINA) + _BILL_READY
            if now < ready:
                raise ProviderAnswerError(f"Alipay: the bill of {day} is not ready before {ready.isoformat()}")
            return []  # a day without business has no bill
        if refusal:
            raise ProviderAnswerError(f"Alipay bill query refused: {self._reason(content, refusal)}")
        url = content.get("bill_download_url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).netloc:
            raise ProviderAnswerError(f"Alipay bill query: bad bill_download_url {url!r}")
        # The URL carries its own short-lived token; the download is a plain GET, repeatable until it expires.
        return HttpCall("GET", url, (), b"", True, "statement")

    # ---- notifications --------------------------------------------------------------------------------------

    def read_notification(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Notification:
        params = _form(body)
        sign = params.get("sign", "")
        if not sign or params.get("sign_type") != "RSA2":
            raise NotificationRejected("bad_signature", "Alipay notification without an RSA2 signature")
        key = self._config.alipay_public_key
        if not any(signature.rsa2_verify(key, text, sign) for text in signature.notification_contents(params)):
            raise NotificationRejected("bad_signature", "Alipay notification signature does not verify")
        missing = [name for name in _NOTIFY_REQUIRED if not params.get(name)]
        if missing:
            raise NotificationRejected("malformed", f"Alipay notification without {', '.join(missing)}")
        if params.get("seller_id") and params["seller_id"] != self._config.seller_id:
            raise NotificationRejected("wrong_merchant", f"Alipay notification for seller {params['seller_id']}")
        try:
            return self._notification(params)
        except ValueError as exc:
            raise NotificationRejected("malformed", f"Alipay notification: {exc}") from exc

    def _notification(self, params: Mapping[str, str]) -> Notification:
        if params.get("out_biz_no") or params.get("gmt_refund") or params.get("refund_fee"):
            if not params.get("out_biz_no"):
                raise ValueError("a refund notification without out_biz_no")
            parse_yuan(params.get("refund_fee") or "0.00")  # well-formed, though it is the trade's running total
            refund = ProviderRefund(
                RefundStatus.SUCCEEDED, params["out_biz_no"], currency="CNY", merchant_id=params["app_id"]
            )
            return Notification(
                NotificationKind.REFUND, params["notify_id"], "", refund=refund, out_trade_no=params["out_trade_no"]
            )
        status = _TRADE_STATUS.get(params["trade_status"])
        if status is None:
            raise ValueError(f"unknown trade_status {params['trade_status']!r}")
        paid_at = parse_china_time(params["gmt_payment"]) if params.get("gmt_payment") else None
        payment = ProviderState(
            status,
            params["out_trade_no"],
            trade_no=params.get("trade_no", ""),
            amount_minor=parse_yuan(params["total_amount"]),
            # Domestic notifications name no currency (it is CNY); cross-border ones carry trans_currency, which
            # must then be CNY too, or the notification is not about the order we opened.
            currency=params.get("trans_currency") or "CNY",
            merchant_id=params["app_id"],
            paid_at=paid_at if status is AttemptStatus.SUCCEEDED else None,
        )
        return Notification(NotificationKind.PAYMENT, params["notify_id"], "", payment=payment)

    def acknowledge(self, accepted: bool) -> HttpReply:
        # Alipay stops retrying on the exact body "success"; anything else is retried for about 25 hours.
        return HttpReply(200, {"content-type": "text/plain; charset=utf-8"}, b"success" if accepted else b"failure")


def _form(body: bytes) -> dict[str, str]:
    """The notification's form fields, percent-decoded in the charset it names; each name at most once."""
    try:
        text = body.decode("ascii")  # a form body is percent-encoded ASCII whatever its charset
        # latin-1 maps every byte, so this first pass cannot fail on the charset it is looking for.
        charset = dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1")).get("charset") or "utf-8"
        if charset.lower() not in ("utf-8", "utf8", "gbk", "gb2312", "gb18030"):
            raise ValueError(f"charset {charset!r}")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding=charset, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotificationRejected("malformed", f"Alipay notification: not a form body: {exc}") from exc
    params = dict(pairs)
    if len(params) != len(pairs):
        raise NotificationRejected("malformed", "Alipay notification repeats a field")
    return params
