"""UnionPay online gateway 5.1.0 under /unionpay/gateway/api/ (frontTransReq.do, appTransReq.do, backTransReq.do,
queryTrans.do) and /unionpay/filedownload (txnType 76, the day's settlement file).

signMethod=01: SHA-256 hex (lowercase) of the ASCII-sorted non-empty `k=v&...` without `signature`; then
SHA256withRSA over that hex string, base64. Answers are signed by the platform key and carry its certId and its
certificate (`signPubKeyCert`). Like the real gateway, synchronous answers are `k=v&k=v` *without* URL-encoding
(split on `&`, then on the first `=`); asynchronous notifications to backUrl are ordinary URL-encoded forms.
"""

from __future__ import annotations

import base64
import html
import re
import zlib
from datetime import date, timedelta
from urllib.parse import urlencode

from aiohttp import web

from channelsim import bills
from channelsim.common import SHANGHAI, digits, fmt, local, now
from channelsim.crypto import forge, rsa_sign, rsa_verify, unionpay_digest
from channelsim.provider import Line, Note, Provider
from channelsim.store import Order, Refund
from channelsim.unionpay_back import ORDER_ID, RESP_MSG, SYNC_CODES, URL, back_trans, query_trans, valid_time

API = "/unionpay/gateway/api"


class UnionPay(Provider):
    name = "unionpay"
    sync_decline_codes = SYNC_CODES
    default_fail_code = "01"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{API}/frontTransReq.do", self.front)
        # The payer's browser may also arrive by GET with the signed form in the query string (an adapter that
        # hands out a link rather than an auto-submitting form).
        app.router.add_get(f"{API}/frontTransReq.do", self.front)
        app.router.add_post(f"{API}/appTransReq.do", self.app)
        app.router.add_post(f"{API}/backTransReq.do", self.back)
        app.router.add_post(f"{API}/queryTrans.do", self.query)
        app.router.add_post("/unionpay/filedownload", self.file)
        app.router.add_route("*", "/unionpay/{tail:.*}", self.not_found)

    @property
    def mer_id(self) -> str:
        return self.keys.identity["unionpay_mer_id"]

    # signing and parsing
    def sign(self, fields: dict[str, str], forged: bool = False) -> dict[str, str]:
        platform = self.keys.platform["unionpay"]
        fields = {
            **fields,
            "version": "5.1.0",
            "encoding": "UTF-8",
            "signMethod": "01",
            "certId": str(platform.serial),
            "signPubKeyCert": platform.cert_pem,
        }
        fields = {k: v for k, v in fields.items() if v != "" and k != "signature"}
        signature = rsa_sign(platform.private, unionpay_digest(fields))
        return {**fields, "signature": forge(signature) if forged else signature}

    def reply(self, code: str, fields: dict[str, str], message: str = "") -> web.Response:
        signed = self.sign({**fields, "respCode": code, "respMsg": message or RESP_MSG.get(code, "交易失败")})
        return web.Response(
            text="&".join(f"{k}={signed[k]}" for k in sorted(signed)), content_type="text/plain", charset="utf-8"
        )

    async def read(self, request: web.Request) -> tuple[dict[str, str], str | None]:
        """The verified form, and None; or the form and the respCode refusing it."""
        try:
            form = request.query if request.method == "GET" else await request.post()
        except Exception:
            return {}, "10"
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        if params.get("version") != "5.1.0" or params.get("signMethod") != "01":
            return params, "10"
        if params.get("encoding", "").upper() != "UTF-8":
            return params, "10"
        if not params.get("signature") or not params.get("certId") or not params.get("merId"):
            return params, "13"
        merchant = self.keys.merchant["unionpay"]
        if params["certId"] != str(merchant.serial):
            return params, "11"
        if not rsa_verify(merchant.public, unionpay_digest(params), params["signature"]):
            return params, "11"
        if params["merId"] != self.mer_id:
            return params, "31"
        return params, None

    @staticmethod
    def echo(params: dict[str, str], *keys: str) -> dict[str, str]:
        wanted = ("merId", "orderId", "txnTime", "txnType", "txnSubType", "bizType", "accessType", *keys)
        return {k: params[k] for k in wanted if k in params}

    # consume
    def _consume_problem(self, params: dict[str, str]) -> str | None:
        required = (
            "txnType",
            "txnSubType",
            "bizType",
            "channelType",
            "accessType",
            "orderId",
            "txnTime",
            "txnAmt",
            "currencyCode",
            "backUrl",
        )
        if any(not params.get(k) for k in required):
            return "13"
        if (params["txnType"], params["txnSubType"], params["bizType"]) != ("01", "01", "000201"):
            return "10"
        if params["accessType"] != "0" or params["channelType"] not in ("07", "08"):
            return "10"
        if not ORDER_ID.match(params["orderId"]) or not valid_time(params["txnTime"]):
            return "10"
        if not params["txnAmt"].isdigit() or not 0 < int(params["txnAmt"]) <= 10_000_000_000:
            return "10"
        if params["currencyCode"] != "156" or not URL.match(params["backUrl"]):
            return "10"
        if self.store.order_by_out(self.name, params["orderId"]) or self.store.refund_by_out(
            self.name, params["orderId"]
        ):
            return "12"
        return None

    def _consume(self, params: dict[str, str]) -> tuple[Order | None, str]:
        code = self._consume_problem(params)
        if code is not None:
            return None, code
        created = now()
        order = self.store.create_order(
            channel=self.name,
            out_trade_no=params["orderId"],
            trade_no=fmt(created, "%Y%m%d%H%M%S") + digits(7),
            amount=int(params["txnAmt"]),
            currency="CNY",
            status="pending",
            notify_url=params["backUrl"],
            pay_at=self.sim.pay_at(),
            created_at=created,
            extra={
                "txnTime": params["txnTime"],
                "frontUrl": params.get("frontUrl", ""),
                "tn": digits(21),
                "channelType": params["channelType"],
                "reqReserved": params.get("reqReserved", ""),
                "traceNo": digits(6),
                "traceTime": fmt(created, "%m%d%H%M%S"),
            },
        )
        forced = self.sim.misbehave.take_decline(self.name, only=SYNC_CODES)
        return order, forced or "00"

    async def app(self, request: web.Request) -> web.Response:
        params, code = await self.read(request)
        if code is not None:
            return self.reply(code, self.echo(params))
        order, code = self._consume(params)
        fields = self.echo(params)
        if order is not None and code == "00":
            fields["tn"] = order.extra["tn"]
        return self.reply(code, fields)

    async def front(self, request: web.Request) -> web.Response:
        params, code = await self.read(request)
        order = None
        if code is None:
            order, code = self._consume(params)
        if order is None:
            text = f"respCode={code} respMsg={RESP_MSG.get(code, '')}"
            return web.Response(
                text=f"<!doctype html><html><body><h1>交易失败</h1><p>{html.escape(text)}</p></body></html>",
                content_type="text/html",
                charset="utf-8",
            )
        pay = f"/control/orders/unionpay/{html.escape(order.out_trade_no)}/pay"
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>银联在线支付 (channel-sim)</title></head><body>"
            f"<h1>银联在线支付 (simulated)</h1><p>orderId {html.escape(order.out_trade_no)}, txnAmt {order.amount}"
            f"</p><form method='post' action='{pay}'><button>Pay now</button></form></body></html>"
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def back(self, request: web.Request) -> web.Response:
        params, code = await self.read(request)
        if code is not None:
            return self.reply(code, self.echo(params))
        return back_trans(self, params)

    async def query(self, request: web.Request) -> web.Response:
        params, code = await self.read(request)
        if code is not None:
            return self.reply(code, self.echo(params))
        return query_trans(self, params)

    async def file(self, request: web.Request) -> web.Response:
        params, code = await self.read(request)
        if code is not None:
            return self.reply(code, self.echo(params))
        settle = params.get("settleDate", "")
        if params.get("txnType") != "76" or params.get("fileType", "00") != "00" or not re.fullmatch(r"\d{4}", settle):
            return self.reply("10", self.echo(params))
        day = self._settle_day(settle)
        if day is None:
            return self.reply("10", self.echo(params))
        _type, text = self.sim.statement(self.name, day)
        if not text:
            return self.reply("98", self.echo(params, "settleDate"))
        content = base64.b64encode(zlib.compress(text.encode())).decode()
        name = f"INN{day:%y%m%d}88ZM_{self.mer_id}"
        return self.reply(
            "00", {**self.echo(params, "settleDate", "fileType"), "fileName": name, "fileContent": content}
        )

    @staticmethod
    def _settle_day(mmdd: str) -> date | None:
        today = local(now(), SHANGHAI).date()
        for year in (today.year, today.year - 1):
            try:
                day = date(year, int(mmdd[:2]), int(mmdd[2:]))
            except ValueError:
                continue
            if day <= today + timedelta(days=1):
                return day
        return None

    async def not_found(self, _request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 Not Found")

    # engine hooks
    def status_of(self, order: Order) -> str:
        if order.status == "paid":
            return "00"
        if order.status == "failed":
            code = order.fail_code or ""
            return code if re.fullmatch(r"\d\d", code) else "01"
        return "05"

    def note(self, event: str, order: Order, refund: Refund | None, flags: set[str]) -> Note | None:
        if event not in ("paid", "refund"):
            return None  # the gateway notifies backUrl of successful transactions
        delta = 1 if "wrong_amount" in flags else 0
        currency = "840" if "wrong_currency" in flags else "156"
        fields = {
            "accessType": "0",
            "bizType": "000201",
            "currencyCode": currency,
            "settleCurrencyCode": currency,
            "merId": "777" + digits(12) if "wrong_app_id" in flags else self.mer_id,
            "respCode": "00",
            "respMsg": RESP_MSG["00"],
            "traceNo": str(order.extra.get("traceNo", "")),
        }
        if refund is None:
            url = order.notify_url
            fields.update(
                orderId=order.out_trade_no,
                queryId=order.trade_no,
                txnTime=order.extra.get("txnTime", ""),
                txnAmt=str(order.amount + delta),
                settleAmt=str(order.paid_amount + delta),
                settleDate=fmt(order.paid_at, "%m%d"),
                txnType="01",
                txnSubType="01",
                traceTime=str(order.extra.get("traceTime", "")),
            )
        else:
            url = refund.notify_url
            fields.update(
                orderId=refund.out_refund_no,
                queryId=refund.refund_no,
                origQryId=order.trade_no,
                txnTime=str(refund.extra.get("txnTime", "")),
                txnAmt=str(refund.amount + delta),
                settleAmt=str(refund.amount + delta),
                settleDate=fmt(refund.done_at, "%m%d"),
                txnType="31" if refund.extra.get("kind") == "void" else "04",
                txnSubType="00",
                traceTime=fmt(refund.created_at, "%m%d%H%M%S"),
            )
        signed = self.sign(fields, forged="forged" in flags)
        return Note(url, urlencode(signed), "application/x-www-form-urlencoded; charset=UTF-8")

    def acknowledged(self, status: int, text: str) -> bool:
        return status == 200

    def error_5xx(self) -> web.StreamResponse:
        return web.Response(
            status=503,
            text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            content_type="text/html",
        )

    def render_statement(self, day: date, lines: list[Line]) -> tuple[str, str]:
        return "text/plain", bills.render_unionpay(lines)
