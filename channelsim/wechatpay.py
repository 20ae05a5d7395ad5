"""WeChat Pay API v3 under /wechatpay (so http://HOST:PORT/wechatpay stands for https://api.mch.weixin.qq.com).

Requests carry `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",
serial_no="…"`, the signature being SHA256withRSA over `METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n`, where URL is
the path and query *as sent, without the /wechatpay prefix* (`/v3/pay/...`). Every answer is signed with the
platform key: `Wechatpay-Timestamp/-Nonce/-Signature/-Serial` over `timestamp\\nnonce\\nbody\\n`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import date
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channelsim import bills
from channelsim.common import digits, fmt, now, parse_day, rfc3339, token
from channelsim.crypto import aes_gcm_encrypt, forge, hmac_hex, rsa_sign, rsa_verify
from channelsim.provider import Line, Note, Provider
from channelsim.store import Order, Refund
from channelsim.wechatpay_views import refund_resource, refund_view, transaction_view

if TYPE_CHECKING:
    from channelsim.engine import Sim

SCHEME = "WECHATPAY2-SHA256-RSA2048"
PREFIX = "/wechatpay"
AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')
OUT_NO = re.compile(r"^[A-Za-z0-9_\-|*@]{6,32}$")
MAX_SKEW_SECONDS = 300
MAX_REFUNDS = 50
MAX_BILLS_CACHED = 64


class WechatPay(Provider):
    name = "wechatpay"
    default_fail_code = "PAYERROR"

    def __init__(self, sim: Sim) -> None:
        super().__init__(sim)
        self._bills: dict[str, str] = {}  # download token -> the file whose SHA1 was announced (bounded)

    def add_routes(self, app: web.Application) -> None:
        v3 = f"{PREFIX}/v3"
        app.router.add_post(f"{v3}/pay/transactions/native", self.native)
        app.router.add_post(f"{v3}/pay/transactions/jsapi", self.jsapi)
        app.router.add_get(f"{v3}/pay/transactions/out-trade-no/{{out_trade_no}}", self.query)
        app.router.add_get(f"{v3}/pay/transactions/id/{{transaction_id}}", self.query)
        app.router.add_post(f"{v3}/pay/transactions/out-trade-no/{{out_trade_no}}/close", self.close)
        app.router.add_post(f"{v3}/refund/domestic/refunds", self.refund)
        app.router.add_get(f"{v3}/refund/domestic/refunds/{{out_refund_no}}", self.refund_query)
        app.router.add_get(f"{v3}/bill/tradebill", self.bill)
        app.router.add_get(f"{v3}/billdownload/file", self.download)
        app.router.add_get(f"{v3}/certificates", self.certificates)
        app.router.add_route("*", f"{PREFIX}/{{tail:.*}}", self.not_found)

    @property
    def mchid(self) -> str:
        return self.keys.identity["wechatpay_mchid"]

    @property
    def appid(self) -> str:
        return self.keys.identity["wechatpay_appid"]

    # signing
    def signed_headers(self, body: str, forged: bool = False) -> dict[str, str]:
        timestamp, nonce = str(int(now())), token(32)
        signature = rsa_sign(self.keys.platform["wechatpay"].private, f"{timestamp}\n{nonce}\n{body}\n".encode())
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": forge(signature) if forged else signature,
            "Wechatpay-Serial": self.keys.platform["wechatpay"].serial_hex,
            "Wechatpay-Signature-Type": SCHEME,
        }

    def reply(self, status: int, body: dict[str, Any] | None) -> web.Response:
        text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        headers = {**self.signed_headers(text), "Request-ID": str(uuid.uuid4())}
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, text=text, content_type="application/json", charset="utf-8", headers=headers)

    def error(self, status: int, code: str, message: str) -> web.Response:
        return self.reply(status, {"code": code, "message": message})

    async def authed(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """Check the merchant's Authorization header; the parsed JSON body (or {}) and None, or an error reply."""
        raw = await request.read()
        scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
        fields = dict(AUTH_FIELD.findall(rest))
        if scheme != SCHEME or not {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} <= fields.keys():
            return {}, self.error(401, "SIGN_ERROR", "Authorization 缺失或格式错误")
        if fields["mchid"] != self.mchid:
            return {}, self.error(401, "SIGN_ERROR", "商户号与请求不匹配")
        if fields["serial_no"].upper() != self.keys.merchant["wechatpay"].serial_hex:
            return {}, self.error(401, "SIGN_ERROR", "商户证书序列号有误")
        if not fields["timestamp"].isdigit() or abs(now() - int(fields["timestamp"])) > MAX_SKEW_SECONDS:
            return {}, self.error(401, "SIGN_ERROR", "请求时间戳已过期")
        url = request.raw_path[len(PREFIX) :]
        message = f"{request.method}\n{url}\n{fields['timestamp']}\n{fields['nonce_str']}\n".encode() + raw + b"\n"
        if not rsa_verify(self.keys.merchant["wechatpay"].public, message, fields["signature"]):
            return {}, self.error(401, "SIGN_ERROR", "签名错误")
        if not raw:
            return {}, None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return {}, self.error(400, "PARAM_ERROR", "请求体不是合法的 JSON 对象")
        return data, None

    # orders
    async def native(self, request: web.Request) -> web.Response:
        return await self._create(request, "NATIVE")

    async def jsapi(self, request: web.Request) -> web.Response:
        return await self._create(request, "JSAPI")

    def _order_problem(self, data: dict[str, Any], trade_type: str) -> str | None:
        amount = data.get("amount")
        if not isinstance(data.get("description"), str) or not 0 < len(data["description"]) <= 127:
            return "description 不合法"
        if not isinstance(data.get("out_trade_no"), str) or not OUT_NO.match(data["out_trade_no"]):
            return "out_trade_no 不合法"
        if not isinstance(data.get("notify_url"), str) or not re.match(r"^https?://", data["notify_url"]):
            return "notify_url 不合法"
        total = amount.get("total") if isinstance(amount, dict) else None
        if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= 10_000_000_000:
            return "amount.total 不合法"
        if isinstance(amount, dict) and amount.get("currency", "CNY") != "CNY":
            return "amount.currency 只支持 CNY"
        payer = data.get("payer")
        if trade_type == "JSAPI" and not (isinstance(payer, dict) and isinstance(payer.get("openid"), str)):
            return "payer.openid 缺失"
        return None

    async def _create(self, request: web.Request, trade_type: str) -> web.Response:
        data, problem = await self.authed(request)
        if problem is not None:
            return problem
        message = self._order_problem(data, trade_type)
        if message is not None:
            return self.error(400, "PARAM_ERROR", message)
        if data.get("appid") != self.appid or data.get("mchid") != self.mchid:
            return self.error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        total = data["amount"]["total"]
        order = self.store.order_by_out(self.name, data["out_trade_no"])
        if order is not None and order.status == "paid":
            return self.error(400, "ORDERPAID", "该订单已支付")
        if order is not None and order.status != "pending":
            return self.error(400, "ORDER_CLOSED", "订单已关闭")
        if order is not None and (order.amount != total or order.extra.get("trade_type") != trade_type):
            return self.error(400, "INVALID_REQUEST", "201 商户订单号重复")
        if order is None:
            created = now()
            extra = {
                "trade_type": trade_type,
                "description": data["description"],
                "attach": data.get("attach", ""),
                "openid": (data.get("payer") or {}).get("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
                "code_url": "weixin://wxpay/bizpayurl?pr=" + token(7),
                "prepay_id": "wx" + fmt(created, "%d%H%M%S") + token(20).lower(),
            }
            order = self.store.create_order(
                channel=self.name,
                out_trade_no=data["out_trade_no"],
                trade_no="4200" + digits(24),
                amount=total,
                currency="CNY",
                status="pending",
                notify_url=data["notify_url"],
                pay_at=self.sim.pay_at(),
                created_at=created,
                extra=extra,
            )
        key = "code_url" if trade_type == "NATIVE" else "prepay_id"
        return self.reply(200, {key: order.extra[key]})

    async def query(self, request: web.Request) -> web.Response:
        _data, problem = await self.authed(request)
        if problem is not None:
            return problem
        if request.query.get("mchid") != self.mchid:
            return self.error(400, "PARAM_ERROR", "mchid 缺失或不匹配")
        if "transaction_id" in request.match_info:
            order = self.store.order_by_trade_no(self.name, request.match_info["transaction_id"])
        else:
            order = self.store.order_by_out(self.name, request.match_info["out_trade_no"])
        if order is None:
            return self.error(404, "ORDER_NOT_EXIST", "订单不存在")
        return self.reply(200, transaction_view(self, order, set()))

    async def close(self, request: web.Request) -> web.Response:
        data, problem = await self.authed(request)
        if problem is not None:
            return problem
        if data.get("mchid") != self.mchid:
            return self.error(400, "PARAM_ERROR", "mchid 缺失或不匹配")
        order = self.store.order_by_out(self.name, request.match_info["out_trade_no"])
        if order is None:
            return self.error(404, "ORDER_NOT_EXIST", "订单不存在")
        if order.status == "paid":
            return self.error(400, "ORDERPAID", "订单已支付")
        if order.status == "pending":
            self.store.update_order(order, status="closed", closed_at=now(), pay_at=None)
        return self.reply(204, None)

    # refunds
    def _refund_problem(self, data: dict[str, Any]) -> str | None:
        amount = data.get("amount")
        if not isinstance(data.get("out_refund_no"), str) or not 0 < len(data["out_refund_no"]) <= 64:
            return "out_refund_no 不合法"
        if not isinstance(amount, dict):
            return "amount 缺失"
        for key in ("refund", "total"):
            value = amount.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"amount.{key} 不合法"
        if amount.get("currency", "CNY") != "CNY":
            return "amount.currency 只支持 CNY"
        if not data.get("transaction_id") and not data.get("out_trade_no"):
            return "transaction_id 与 out_trade_no 必填其一"
        return None

    async def refund(self, request: web.Request) -> web.Response:
        data, problem = await self.authed(request)
        if problem is not None:
            return problem
        message = self._refund_problem(data)
        if message is not None:
            return self.error(400, "PARAM_ERROR", message)
        if data.get("transaction_id"):
            order = self.store.order_by_trade_no(self.name, str(data["transaction_id"]))
        else:
            order = self.store.order_by_out(self.name, str(data["out_trade_no"]))
        if order is None:
            return self.error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        amount = data["amount"]["refund"]
        existing = self.store.refund_by_out(self.name, data["out_refund_no"])
        if existing is not None:
            if existing.order_id != order.id or existing.amount != amount:
                return self.error(400, "INVALID_REQUEST", "退款单号已用于其他退款请求")
            return self.reply(200, refund_view(order, existing))
        if order.status != "paid":
            return self.error(400, "INVALID_REQUEST", "订单未支付")
        if data["amount"]["total"] != order.amount:
            return self.error(400, "PARAM_ERROR", "订单金额与实际不符")
        if self.store.refunded(order.id) + amount > order.paid_amount:
            return self.error(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        if len(self.store.refunds_of(order.id, MAX_REFUNDS + 1)) >= MAX_REFUNDS:
            return self.error(400, "INVALID_REQUEST", f"部分退款次数不能超过{MAX_REFUNDS}次")
        refund = self.sim.start_refund(
            order,
            data["out_refund_no"],
            "50" + digits(27),
            amount,
            notify_url=str(data.get("notify_url") or ""),
            extra={"reason": str(data.get("reason", ""))[:80]},
        )
        return self.reply(200, refund_view(order, refund))

    async def refund_query(self, request: web.Request) -> web.Response:
        _data, problem = await self.authed(request)
        if problem is not None:
            return problem
        refund = self.store.refund_by_out(self.name, request.match_info["out_refund_no"])
        order = self.store.order(refund.order_id) if refund is not None else None
        if refund is None or order is None:
            return self.error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return self.reply(200, refund_view(order, refund))

    # bills and certificates
    async def bill(self, request: web.Request) -> web.Response:
        _data, problem = await self.authed(request)
        if problem is not None:
            return problem
        day = parse_day(request.query.get("bill_date", ""))
        if day is None or request.query.get("bill_type", "ALL") not in ("ALL", "SUCCESS", "REFUND"):
            return self.error(400, "PARAM_ERROR", "bill_date 或 bill_type 不合法")
        _type, text = self.sim.statement(self.name, day)
        if text.count("\n") <= 3:  # the header and the summary only: no transactions that day
            return self.error(400, "NO_STATEMENT_EXIST", "账单文件不存在")
        key = f"{day}.{hmac_hex(self.keys.sim_secret.hex(), f'wechatpay:{day}:{now()}'.encode())[:24]}"
        if len(self._bills) >= MAX_BILLS_CACHED:
            self._bills.pop(next(iter(self._bills)))
        self._bills[key] = text
        url = f"{request.scheme}://{request.host}{PREFIX}/v3/billdownload/file?token={key}"
        sha1 = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - the protocol's hash_type
        return self.reply(200, {"hash_type": "SHA1", "hash_value": sha1, "download_url": url})

    async def download(self, request: web.Request) -> web.StreamResponse:
        _data, problem = await self.authed(request)
        if problem is not None:
            return problem
        text = self._bills.get(request.query.get("token", ""))
        if text is None:
            return self.error(400, "INVALID_REQUEST", "token 无效或已过期")
        # As in the real API, the file itself is not signed: its SHA1 came signed with the bill answer.
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def certificates(self, request: web.Request) -> web.Response:
        _data, problem = await self.authed(request)
        if problem is not None:
            return problem
        platform = self.keys.platform["wechatpay"]
        nonce = token(12)
        sealed = aes_gcm_encrypt(self.keys.wechat_apiv3_key, nonce, "certificate", platform.cert_pem.encode())
        item = {
            "serial_no": platform.serial_hex,
            "effective_time": rfc3339(now() - 86400),
            "expire_time": rfc3339(now() + 3650 * 86400),
            "encrypt_certificate": {
                "algorithm": "AEAD_AES_256_GCM",
                "nonce": nonce,
                "associated_data": "certificate",
                "ciphertext": sealed,
            },
        }
        return self.reply(200, {"data": [item]})

    async def not_found(self, _request: web.Request) -> web.Response:
        return self.error(404, "NOT_FOUND", "请求的资源不存在")

    # engine hooks
    def status_of(self, order: Order) -> str:
        if order.status == "paid":
            return "REFUND" if self.store.refunds_of(order.id, 1) else "SUCCESS"
        return {"pending": "NOTPAY", "failed": "PAYERROR"}.get(order.status, "CLOSED")

    def note(self, event: str, order: Order, refund: Refund | None, flags: set[str]) -> Note | None:
        if event == "paid":
            url, kind, summary, resource = order.notify_url, "TRANSACTION.SUCCESS", "支付成功", "transaction"
            plain = transaction_view(self, order, flags)
        elif event == "refund" and refund is not None:
            url, kind, summary, resource = refund.notify_url, "REFUND.SUCCESS", "退款成功", "refund"
            plain = refund_resource(self, order, refund, flags)
        else:
            return None  # WeChat Pay calls back on success only
        nonce = token(12)
        sealed = aes_gcm_encrypt(
            self.keys.wechat_apiv3_key,
            nonce,
            resource,
            json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode(),
        )
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": rfc3339(now()),
            "resource_type": "encrypt-resource",
            "event_type": kind,
            "summary": summary,
            "resource": {
                "original_type": resource,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": sealed,
                "associated_data": resource,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
        return Note(url, body, "application/json", self.signed_headers(body, forged="forged" in flags))

    def acknowledged(self, status: int, text: str) -> bool:
        return status in (200, 204)

    def error_5xx(self) -> web.StreamResponse:
        return self.error(500, "SYSTEM_ERROR", "系统错误")

    def render_statement(self, day: date, lines: list[Line]) -> tuple[str, str]:
        return "text/plain", bills.render_wechat(lines, self.appid, self.mchid)
