"""Alipay openapi gateway (`POST/GET /alipay/gateway.do` stands for https://openapi.alipay.com/gateway.do).

Requests: RSA2 (SHA256withRSA, base64) over the ASCII-sorted `k=v&...` of every non-empty parameter except `sign`.
Responses: `{"<method_with_underscores>_response": {...}, "sign": "..."}`, the sign covering the exact JSON text of
the `*_response` value. Notifications: form POST signed over every non-empty field except `sign` and `sign_type`.
"""

from __future__ import annotations

import html
import json
import secrets
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from channelsim import bills
from channelsim.common import digits, fmt, now, parse_day, parse_yuan, yuan
from channelsim.crypto import forge, hmac_hex, rsa_sign, rsa_verify, sorted_pairs
from channelsim.provider import Line, Note, Provider
from channelsim.store import Order, Refund

OK = {"code": "10000", "msg": "Success"}
PAGE_METHODS = ("alipay.trade.page.pay", "alipay.trade.wap.pay")
MAX_REFUNDS = 50
BUYER_LOGON_ID = "159****5620"
BUYER_ID = "2088102177846880"


def biz_error(sub_code: str, sub_msg: str) -> dict[str, str]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


class Alipay(Provider):
    name = "alipay"
    default_fail_code = "TRADE_CLOSED"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("GET", "/alipay/gateway.do", self.gateway)
        app.router.add_route("POST", "/alipay/gateway.do", self.gateway)
        app.router.add_get("/alipay/bill/{token}", self.download)
        app.router.add_route("*", "/alipay/{tail:.*}", self.not_found)

    @property
    def app_id(self) -> str:
        return self.keys.identity["alipay_app_id"]

    # the gateway
    async def gateway(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        if request.method == "POST" and request.content_type in ("application/x-www-form-urlencoded", ""):
            try:
                form = await request.post()
            except Exception:
                error = {
                    "code": "40002",
                    "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-parameter",
                    "sub_msg": "请求体无法解析",
                }
                return self._reply("error_response", error, False)
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        method = params.get("method", "")
        problem = self._check(params)
        if problem is not None:
            key = method if method in self.methods else "error_response"
            return self._page_error(problem) if method in PAGE_METHODS else self._reply(key, problem, False)
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            biz = None
        if not isinstance(biz, dict):
            return self._reply(method, biz_error("ACQ.INVALID_PARAMETER", "biz_content 不是合法的 JSON 对象"))
        if method in PAGE_METHODS:
            return self._page(method, params, biz)
        body = self.methods[method](params, biz, request)
        return self._reply(method, body)

    @property
    def methods(self) -> dict[str, Any]:
        return {
            "alipay.trade.precreate": self.precreate,
            "alipay.trade.page.pay": None,
            "alipay.trade.wap.pay": None,
            "alipay.trade.query": self.query,
            "alipay.trade.close": self.close,
            "alipay.trade.refund": self.refund,
            "alipay.trade.fastpay.refund.query": self.refund_query,
            "alipay.data.dataservice.bill.downloadurl.query": self.bill_url,
        }

    def _check(self, params: dict[str, str]) -> dict[str, str] | None:
        """Gateway-level checks, in the real gateway's order; None when the call may proceed."""
        method = params.get("method", "")
        missing = {"code": "40001", "msg": "Missing Required Arguments"}
        invalid = {"code": "40002", "msg": "Invalid Arguments"}
        if not method:
            return {**missing, "sub_code": "isv.missing-method", "sub_msg": "缺少方法名参数"}
        if method not in self.methods:
            return {**invalid, "sub_code": "isv.invalid-method", "sub_msg": "不存在的方法名"}
        if not params.get("app_id"):
            return {**missing, "sub_code": "isv.missing-app-id", "sub_msg": "缺少AppID参数"}
        if params["app_id"] != self.app_id:
            return {**invalid, "sub_code": "isv.invalid-app-id", "sub_msg": "无效的AppID参数"}
        if params.get("sign_type") != "RSA2":
            return {**invalid, "sub_code": "isv.invalid-signature-type", "sub_msg": "无效的签名类型"}
        if not params.get("sign"):
            return {**missing, "sub_code": "isv.missing-signature", "sub_msg": "缺少签名参数"}
        try:
            datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return {**invalid, "sub_code": "isv.invalid-timestamp", "sub_msg": "非法的时间戳参数"}
        if params.get("charset", "utf-8").lower() != "utf-8":
            return {**invalid, "sub_code": "isv.invalid-charset", "sub_msg": "字符集错误 (the simulator speaks utf-8)"}
        content = sorted_pairs(params, exclude=("sign",)).encode()
        if not rsa_verify(self.keys.merchant["alipay"].public, content, params["sign"]):
            return {**invalid, "sub_code": "isv.invalid-signature", "sub_msg": "验签出错"}
        return None

    def _reply(self, method: str, body: dict[str, Any], signed: bool = True) -> web.Response:
        key = method if method == "error_response" else method.replace(".", "_") + "_response"
        inner = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        text = f'{{"{key}":{inner}'
        if signed:
            text += f',"sign":"{rsa_sign(self.keys.platform["alipay"].private, inner.encode())}"'
        return web.Response(text=text + "}", content_type="application/json", charset="utf-8")

    # methods
    def _create(self, params: dict[str, str], biz: dict[str, Any], product: str) -> Order | dict[str, str]:
        out, amount, subject = biz.get("out_trade_no"), parse_yuan(biz.get("total_amount")), biz.get("subject")
        if not isinstance(out, str) or not 0 < len(out) <= 64 or not subject:
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no, total_amount, subject")
        if amount is None or not 1 <= amount <= 10_000_000_000:
            return biz_error("ACQ.INVALID_PARAMETER", "total_amount 不合法")
        existing = self.store.order_by_out(self.name, out)
        if existing is not None:
            if existing.status == "paid":
                return biz_error("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            if existing.status != "pending":
                return biz_error("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
            if existing.amount != amount:
                return biz_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            return existing
        created = now()
        return self.store.create_order(
            channel=self.name,
            out_trade_no=out,
            trade_no=fmt(created, "%Y%m%d") + digits(20),
            amount=amount,
            currency="CNY",
            status="pending",
            notify_url=params.get("notify_url", ""),
            pay_at=self.sim.pay_at(),
            created_at=created,
            extra={
                "subject": str(subject)[:256],
                "product": product,
                "qr_code": "https://qr.alipay.com/bax0" + secrets.token_hex(10),
                "return_url": params.get("return_url", ""),
            },
        )

    def precreate(self, params: dict[str, str], biz: dict[str, Any], _request: web.Request) -> dict[str, Any]:
        order = self._create(params, biz, "FACE_TO_FACE_PAYMENT")
        if not isinstance(order, Order):
            return order
        return {**OK, "out_trade_no": order.out_trade_no, "qr_code": order.extra["qr_code"]}

    def _page(self, method: str, params: dict[str, str], biz: dict[str, Any]) -> web.Response:
        product = "FAST_INSTANT_TRADE_PAY" if method == "alipay.trade.page.pay" else "QUICK_WAP_WAY"
        order = self._create(params, biz, product)
        if not isinstance(order, Order):
            return self._page_error(order)
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in (
                ("out_trade_no", order.out_trade_no),
                ("trade_no", order.trade_no),
                ("total_amount", yuan(order.amount)),
                ("subject", order.extra.get("subject", "")),
            )
        )
        pay = f"/control/orders/alipay/{html.escape(order.out_trade_no)}/pay"
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>支付宝 - 网上支付 (channel-sim)</title></head>"
            f"<body><h1>支付宝收银台 (simulated)</h1><table>{rows}</table>"
            f"<form method='post' action='{pay}'><button>Pay now</button></form></body></html>"
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    def _page_error(self, error: dict[str, str]) -> web.Response:
        text = html.escape(json.dumps(error, ensure_ascii=False))
        page = f"<!doctype html><html><head><meta charset='utf-8'><title>错误</title></head><body>{text}</body></html>"
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    def _find(self, biz: dict[str, Any]) -> Order | None:
        if isinstance(biz.get("trade_no"), str) and biz["trade_no"]:
            return self.store.order_by_trade_no(self.name, biz["trade_no"])
        if isinstance(biz.get("out_trade_no"), str) and biz["out_trade_no"]:
            return self.store.order_by_out(self.name, biz["out_trade_no"])
        return None

    def query(self, _params: dict[str, str], biz: dict[str, Any], _request: web.Request) -> dict[str, Any]:
        order = self._find(biz)
        if order is None:
            return biz_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        paid = order.paid_amount if order.status == "paid" else 0
        body = {
            **OK,
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "buyer_logon_id": BUYER_LOGON_ID,
            "trade_status": self.status_of(order),
            "total_amount": yuan(order.amount),
            "buyer_pay_amount": yuan(paid),
            "point_amount": "0.00",
            "invoice_amount": yuan(paid),
            "receipt_amount": yuan(paid),
            "subject": order.extra.get("subject", ""),
            "buyer_user_id": BUYER_ID,
        }
        if order.paid_at is not None:
            body["send_pay_date"] = fmt(order.paid_at, "%Y-%m-%d %H:%M:%S")
        return body

    def close(self, _params: dict[str, str], biz: dict[str, Any], _request: web.Request) -> dict[str, Any]:
        order = self._find(biz)
        if order is None:
            return biz_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        if order.status == "paid":
            return biz_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if order.status == "pending":
            order = self.store.update_order(order, status="closed", closed_at=now(), pay_at=None)
        return {**OK, "trade_no": order.trade_no, "out_trade_no": order.out_trade_no}

    def refund(self, _params: dict[str, str], biz: dict[str, Any], _request: web.Request) -> dict[str, Any]:
        order = self._find(biz)
        if order is None:
            return biz_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        amount = parse_yuan(biz.get("refund_amount"))
        if not amount:
            return biz_error("ACQ.INVALID_PARAMETER", "refund_amount 不合法")
        request_no = biz.get("out_request_no") or order.out_trade_no
        if not isinstance(request_no, str) or len(request_no) > 64:
            return biz_error("ACQ.INVALID_PARAMETER", "out_request_no 不合法")
        refunds = self.store.refunds_of(order.id, MAX_REFUNDS + 1)
        same = next((r for r in refunds if r.out_refund_no == request_no), None)
        fund_change = "N"
        if same is not None:
            if same.amount != amount:
                return biz_error("ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致")
        elif order.status != "paid":
            return biz_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        elif self.store.refunded(order.id) + amount > order.paid_amount:
            return biz_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        elif len(refunds) >= MAX_REFUNDS:
            return biz_error("ACQ.INVALID_PARAMETER", f"一笔交易最多退款 {MAX_REFUNDS} 次")
        else:
            # Alipay refunds are synchronous: the money has moved when this answer says fund_change=Y.
            same = self.sim.start_refund(
                order, request_no, digits(24), amount, notify_url=order.notify_url, status="succeeded"
            )
            fund_change = "Y"
        return {
            **OK,
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "buyer_logon_id": BUYER_LOGON_ID,
            "fund_change": fund_change,
            "refund_fee": yuan(self.store.refunded(order.id)),
            "gmt_refund_pay": fmt(same.done_at, "%Y-%m-%d %H:%M:%S"),
            "buyer_user_id": BUYER_ID,
        }

    def refund_query(self, _params: dict[str, str], biz: dict[str, Any], _request: web.Request) -> dict[str, Any]:
        order = self._find(biz)
        if order is None:
            return biz_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        request_no = biz.get("out_request_no") or order.out_trade_no
        body = {**OK, "trade_no": order.trade_no, "out_trade_no": order.out_trade_no, "out_request_no": request_no}
        refund = next((r for r in self.store.refunds_of(order.id) if r.out_refund_no == request_no), None)
        if refund is not None and refund.status == "succeeded":
            # As in the real API: no refund_amount in the answer means there was no such refund.
            body.update(
                total_amount=yuan(order.amount),
                refund_amount=yuan(refund.amount),
                refund_status="REFUND_SUCCESS",
                gmt_refund_pay=fmt(refund.done_at, "%Y-%m-%d %H:%M:%S"),
            )
        return body

    def bill_url(self, _params: dict[str, str], biz: dict[str, Any], request: web.Request) -> dict[str, Any]:
        day = parse_day(str(biz.get("bill_date", "")))
        if biz.get("bill_type") not in ("trade", "signcustomer") or day is None:
            return biz_error("isp.bill_not_exist", "账单不存在 (the simulator serves daily trade bills)")
        token = f"{day.isoformat()}.{hmac_hex(self.keys.sim_secret.hex(), f'alipay:{day}'.encode())[:24]}"
        return {**OK, "bill_download_url": f"{request.scheme}://{request.host}/alipay/bill/{token}"}

    async def download(self, request: web.Request) -> web.StreamResponse:
        day_text, _, mac = request.match_info["token"].partition(".")
        day = parse_day(day_text)
        expected = hmac_hex(self.keys.sim_secret.hex(), f"alipay:{day_text}".encode())[:24]
        if day is None or not secrets.compare_digest(mac, expected):
            return web.Response(status=404, text="file not found")
        content_type, text = self.sim.statement(self.name, day)
        return web.Response(
            text=text,
            content_type=content_type,
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{day:%Y%m%d}_trade.csv"'},
        )

    async def not_found(self, _request: web.Request) -> web.StreamResponse:
        error = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method", "sub_msg": "不存在"}
        return self._reply("error_response", error, False)

    # engine hooks
    def status_of(self, order: Order) -> str:
        if order.status == "pending":
            return "WAIT_BUYER_PAY"
        if order.status == "paid":
            fully_refunded = self.store.refunded(order.id) >= order.paid_amount
            return "TRADE_CLOSED" if fully_refunded else "TRADE_SUCCESS"
        return "TRADE_CLOSED"

    def note(self, event: str, order: Order, refund: Refund | None, flags: set[str]) -> Note | None:
        if event not in ("paid", "failed", "refund") or not order.notify_url:
            return None
        delta = 1 if "wrong_amount" in flags else 0
        paid = order.paid_amount + delta if order.status == "paid" else 0
        fields = {
            "notify_id": secrets.token_hex(16),
            "notify_time": fmt(now(), "%Y-%m-%d %H:%M:%S"),
            "notify_type": "trade_status_sync",
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "app_id": "2021" + digits(12) if "wrong_app_id" in flags else self.app_id,
            "seller_id": self.keys.identity["alipay_seller_id"],
            "buyer_id": BUYER_ID,
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "trade_status": self.status_of(order),
            "total_amount": yuan(order.amount + delta),
            "receipt_amount": yuan(paid),
            "buyer_pay_amount": yuan(paid),
            "invoice_amount": yuan(paid),
            "subject": order.extra.get("subject", ""),
            "gmt_create": fmt(order.created_at, "%Y-%m-%d %H:%M:%S"),
            "gmt_payment": fmt(order.paid_at, "%Y-%m-%d %H:%M:%S"),
            "gmt_close": fmt(order.closed_at, "%Y-%m-%d %H:%M:%S"),
        }
        if refund is not None:
            earlier = [r for r in self.store.refunds_of(order.id) if r.id <= refund.id and r.status != "failed"]
            refunded = sum(r.amount for r in earlier)
            fields.update(
                out_biz_no=refund.out_refund_no,
                refund_fee=yuan(refunded + delta),
                gmt_refund=fmt(refund.done_at, "%Y-%m-%d %H:%M:%S.000"),
            )
            fields["trade_status"] = "TRADE_CLOSED" if refunded >= order.paid_amount else "TRADE_SUCCESS"
        if "wrong_currency" in flags:
            fields["trans_currency"] = "USD"
        fields = {k: v for k, v in fields.items() if v != ""}
        signature = rsa_sign(
            self.keys.platform["alipay"].private, sorted_pairs(fields, exclude=("sign", "sign_type")).encode()
        )
        fields["sign"] = forge(signature) if "forged" in flags else signature
        return Note(order.notify_url, urlencode(fields), "application/x-www-form-urlencoded; charset=utf-8")

    def acknowledged(self, status: int, text: str) -> bool:
        return status == 200 and text.strip() == "success"

    def error_5xx(self) -> web.StreamResponse:
        error = {
            "code": "20000",
            "msg": "Service Currently Unavailable",
            "sub_code": "isp.unknow-error",
            "sub_msg": "系统繁忙",
        }
        text = json.dumps({"error_response": error}, ensure_ascii=False, separators=(",", ":"))
        return web.Response(status=503, text=text, content_type="application/json", charset="utf-8")

    def render_statement(self, day: date, lines: list[Line]) -> tuple[str, str]:
        return "text/csv", bills.render_alipay(day, lines, self.keys.identity["alipay_seller_id"])
