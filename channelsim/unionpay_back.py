# ruff: noqa: RUF001 - respMsg texts are the gateway's own, fullwidth punctuation included
"""UnionPay backTransReq.do (txnType 04 refund, 31 void) and queryTrans.do (txnType 00)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from channelsim.common import SHANGHAI, digits, fmt, local, now
from channelsim.store import Order, Refund

if TYPE_CHECKING:
    from channelsim.unionpay import UnionPay

MAX_REFUNDS = 50
SYNC_CODES = ("03", "04", "05")
RESP_MSG = {
    "00": "成功[0000000]",
    "01": "交易失败",
    "03": "交易通讯超时，请发起查询交易",
    "04": "交易状态未明，请查询对账结果",
    "05": "交易已受理，请稍后查询交易结果",
    "10": "报文格式错误",
    "11": "验证签名失败",
    "12": "重复交易",
    "13": "报文交易要素缺失",
    "31": "商户状态不正确",
    "33": "交易金额超限",
    "34": "查无此交易",
    "35": "原交易不存在或状态不正确",
    "36": "与原交易信息不符",
    "98": "文件不存在",
}
ORDER_ID = re.compile(r"^[A-Za-z0-9]{8,40}$")
URL = re.compile(r"^https?://\S+$")


def valid_time(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


def _back_problem(provider: UnionPay, params: dict[str, str]) -> str | None:
    required = (
        "txnType",
        "txnSubType",
        "bizType",
        "accessType",
        "orderId",
        "txnTime",
        "txnAmt",
        "origQryId",
        "backUrl",
    )
    if any(not params.get(k) for k in required):
        return "13"
    if params["txnType"] not in ("04", "31") or params["txnSubType"] != "00" or params["accessType"] != "0":
        return "10"
    if not ORDER_ID.match(params["orderId"]) or not valid_time(params["txnTime"]) or not URL.match(params["backUrl"]):
        return "10"
    if not params["txnAmt"].isdigit() or int(params["txnAmt"]) <= 0:
        return "10"
    if provider.store.refund_by_out(provider.name, params["orderId"]) or provider.store.order_by_out(
        provider.name, params["orderId"]
    ):
        return "12"
    return None


def _original_problem(provider: UnionPay, params: dict[str, str], order: Order | None) -> str | None:
    if order is None or order.status != "paid":
        return "35"
    amount = int(params["txnAmt"])
    refunds = provider.store.refunds_of(order.id, MAX_REFUNDS + 1)
    refunded = provider.store.refunded(order.id)
    if params["txnType"] == "31":
        same_day = order.paid_at is not None and local(order.paid_at, SHANGHAI).date() == local(now(), SHANGHAI).date()
        if not same_day or refunded:
            return "35"
        if amount != order.paid_amount:
            return "36"
    elif refunded + amount > order.paid_amount:
        return "33"
    if len(refunds) >= MAX_REFUNDS:
        return "35"
    return None


def back_trans(provider: UnionPay, params: dict[str, str]) -> web.Response:
    echo = provider.echo(params, "origQryId", "txnAmt")
    code = _back_problem(provider, params)
    if code is not None:
        return provider.reply(code, echo)
    order = provider.store.order_by_trade_no(provider.name, params["origQryId"])
    code = _original_problem(provider, params, order)
    if code is not None or order is None:
        return provider.reply(code or "35", echo)
    query_id = fmt(now(), "%Y%m%d%H%M%S") + digits(7)
    kind = "void" if params["txnType"] == "31" else "refund"
    provider.sim.start_refund(
        order,
        params["orderId"],
        query_id,
        int(params["txnAmt"]),
        notify_url=params["backUrl"],
        extra={"kind": kind, "txnTime": params["txnTime"]},
    )
    forced = provider.sim.misbehave.take_decline(provider.name, only=provider.sync_decline_codes)
    return provider.reply(forced or "00", {**echo, "queryId": query_id})


def _consume_view(provider: UnionPay, order: Order) -> dict[str, str]:
    orig = provider.status_of(order)
    view = {
        "orderId": order.out_trade_no,
        "txnTime": str(order.extra.get("txnTime", "")),
        "txnType": "01",
        "txnSubType": "01",
        "txnAmt": str(order.amount),
        "currencyCode": "156",
        "origRespCode": orig,
        "origRespMsg": RESP_MSG.get(orig, "交易失败"),
        "queryId": order.trade_no,
    }
    if order.status == "paid":
        view.update(
            settleAmt=str(order.paid_amount),
            settleCurrencyCode="156",
            settleDate=fmt(order.paid_at, "%m%d"),
            traceNo=str(order.extra.get("traceNo", "")),
            traceTime=str(order.extra.get("traceTime", "")),
        )
    return view


def _refund_view(order: Order, refund: Refund) -> dict[str, str]:
    orig = "00" if refund.status == "succeeded" else "05"
    view = {
        "orderId": refund.out_refund_no,
        "txnTime": str(refund.extra.get("txnTime", "")),
        "txnType": "31" if refund.extra.get("kind") == "void" else "04",
        "txnSubType": "00",
        "txnAmt": str(refund.amount),
        "currencyCode": "156",
        "origRespCode": orig,
        "origRespMsg": RESP_MSG[orig],
        "queryId": refund.refund_no,
        "origQryId": order.trade_no,
    }
    if refund.done_at is not None:
        view.update(settleAmt=str(refund.amount), settleCurrencyCode="156", settleDate=fmt(refund.done_at, "%m%d"))
    return view


def query_trans(provider: UnionPay, params: dict[str, str]) -> web.Response:
    echo = provider.echo(params)
    if not params.get("orderId") or not params.get("txnTime"):
        return provider.reply("13", echo)
    if params.get("txnType") != "00" or params.get("txnSubType") != "00":
        return provider.reply("10", echo)
    order = provider.store.order_by_out(provider.name, params["orderId"])
    if order is not None and order.extra.get("txnTime") == params["txnTime"]:
        return provider.reply("00", {**echo, **_consume_view(provider, order)})
    refund = provider.store.refund_by_out(provider.name, params["orderId"])
    original = provider.store.order(refund.order_id) if refund is not None else None
    if refund is not None and original is not None and refund.extra.get("txnTime") == params["txnTime"]:
        return provider.reply("00", {**echo, **_refund_view(original, refund)})
    return provider.reply("34", echo)
