# ruff: noqa: RUF001 - the bills reproduce the providers' Chinese headers, fullwidth punctuation included
"""A day's statement lines of one channel, with the statement faults applied (for reconciliation tests).

Faults act on the first line of the day: `missing_line` removes it; `amount_differs` adds one minor unit to the
(new) first line; `status_differs` marks it with another status; `duplicate_line` repeats it; `extra_line` appends
a payment the simulator never had (out_trade_no SIMEXTRA…).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, date, timedelta
from typing import TYPE_CHECKING

from channelsim.common import day_bounds, digits, fmt, now, yuan
from channelsim.provider import Line
from channelsim.store import Order

if TYPE_CHECKING:
    from channelsim.engine import Sim


def statement_lines(sim: Sim, channel: str, day: date) -> list[Line]:
    provider = sim.providers[channel]
    start, end = day_bounds(day, provider.statement_tz)
    lines: list[Line] = []
    for order in sim.store.paid_between(channel, start, end):
        if order.paid_amount > 0 and order.paid_at is not None:
            lines.append(Line("payment", order, None, order.paid_amount, order.paid_at))
    for refund in sim.store.refunded_between(channel, start, end):
        original = sim.store.order(refund.order_id)
        if original is not None and refund.done_at is not None:
            lines.append(Line("refund", original, refund, refund.amount, refund.done_at))
    lines.sort(key=lambda line: line.at)
    return apply_faults(lines, sim.misbehave.get(channel)["statement"], channel, start)


def apply_faults(lines: list[Line], faults: list[str], channel: str, day_start: float) -> list[Line]:
    lines = list(lines)
    if "missing_line" in faults and lines:
        lines.pop(0)
    if "amount_differs" in faults and lines:
        # Every amount column of the line differs (order amount and amount received alike), whichever one the
        # merchant's reconciliation reads.
        first = lines[0]
        order = dataclasses.replace(first.order, amount=first.order.amount + 1)
        lines[0] = dataclasses.replace(
            first, amount=first.amount + 1, order=order if first.refund is None else first.order
        )
    if "status_differs" in faults and lines:
        lines[0] = dataclasses.replace(lines[0], status_differs=True)
    if "duplicate_line" in faults and lines:
        lines.insert(1, lines[0])
    if "extra_line" in faults:
        lines.append(Line("payment", _phantom(channel, day_start), None, 100, day_start + 12 * 3600))
    return lines


def _phantom(channel: str, day_start: float) -> Order:
    at = day_start + 12 * 3600
    return Order(
        id=0,
        channel=channel,
        out_trade_no="SIMEXTRA" + digits(10),
        trade_no="9" + digits(27),
        amount=100,
        currency="CNY" if channel != "card" else "usd",
        status="paid",
        paid_amount=100,
        notify_url="",
        pay_at=None,
        created_at=at,
        paid_at=at,
        closed_at=None,
        fail_code=None,
        extra={"phantom": True},
    )


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


ALIPAY_COLUMNS = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "备注",
    "交易状态",
]


def render_alipay(day: date, lines: list[Line], seller_id: str) -> str:
    """Alipay's trade bill, simplified: one UTF-8 CSV (the real one is a GBK zip of two CSVs)."""
    stamp = "%Y-%m-%d %H:%M:%S"
    rows = [ALIPAY_COLUMNS]
    for line in lines:
        order, refund = line.order, line.refund
        if refund is None:
            kind, status, received, request_no = "交易", "TRADE_SUCCESS", line.amount, ""
        else:
            kind, status, received, request_no = "退款", "REFUND_SUCCESS", -line.amount, refund.out_refund_no
        rows.append(
            [
                order.trade_no,
                order.out_trade_no,
                kind,
                str(order.extra.get("subject", "")),
                fmt(order.created_at, stamp),
                fmt(line.at, stamp),
                "159****5620",
                yuan(order.amount),
                yuan(received),
                request_no,
                "0.00",
                "",
                "TRADE_CLOSED" if line.status_differs else status,
            ]
        )
    payments = [line for line in lines if line.refund is None]
    refunds = [line for line in lines if line.refund is not None]
    head = (
        f"#支付宝业务明细查询\n#账号：[{seller_id}0156]\n"
        f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{day + timedelta(days=1):%Y年%m月%d日} 00:00:00]\n"
        "#-----------------------------------------业务明细列表----------------------------------------\n"
    )
    tail = (
        "#-----------------------------------------业务明细列表结束------------------------------------\n"
        f"#交易合计：{len(payments)}笔，商家实收共{yuan(sum(p.amount for p in payments))}元\n"
        f"#退款合计：{len(refunds)}笔，商家实收共{yuan(-sum(r.amount for r in refunds))}元\n"
        f"#导出时间：[{fmt(now(), '%Y年%m月%d日 %H:%M:%S')}]\n"
    )
    return head + _csv(rows) + tail


WECHAT_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)


def _wechat_fields(line: Line, appid: str, mchid: str) -> list[str]:
    order, refund = line.order, line.refund
    openid = str(order.extra.get("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"))
    head = [fmt(line.at, "%Y-%m-%d %H:%M:%S"), appid, mchid, "0", "", order.trade_no, order.out_trade_no, openid]
    head.append(str(order.extra.get("trade_type", "NATIVE")))
    goods = [str(order.extra.get("description", "")), str(order.extra.get("attach", "")), "0.00000", "0.60%"]
    if refund is None:
        state = "REVOKED" if line.status_differs else "SUCCESS"
        middle = [state, "OTHERS", "CNY", yuan(line.amount), "0.00", "0", "0", "0.00", "0.00", "", ""]
        return [*head, *middle, *goods, yuan(order.amount), "0.00", ""]
    refund_state = "ABNORMAL" if line.status_differs else "SUCCESS"
    middle = ["REFUND", "OTHERS", "CNY", "0.00", "0.00", refund.refund_no, refund.out_refund_no, yuan(line.amount)]
    return [*head, *middle, "0.00", "ORIGINAL", refund_state, *goods, "0.00", yuan(line.amount), ""]


def render_wechat(lines: list[Line], appid: str, mchid: str) -> str:
    """WeChat Pay's trade bill (bill_type=ALL): every field prefixed with a backtick, then a summary."""
    rows = [WECHAT_COLUMNS]
    for line in lines:
        rows.append(",".join("`" + f.replace(",", " ") for f in _wechat_fields(line, appid, mchid)))
    payments = [line for line in lines if line.refund is None]
    settled = sum(line.amount for line in payments)
    ordered = sum(line.order.amount for line in payments)
    refunded = sum(line.amount for line in lines if line.refund is not None)
    rows.append("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额")
    totals = [str(len(lines)), yuan(settled), yuan(refunded), "0.00", "0.00000", yuan(ordered), yuan(refunded)]
    rows.append(",".join("`" + t for t in totals))
    return "\n".join(rows) + "\n"


def render_unionpay(lines: list[Line]) -> str:
    """The simulator's UnionPay settlement file (documented in channelsim/README.md): one `|`-separated line per
    transaction, `txnType|orderId|queryId|txnAmt|currencyCode|respCode|txnTime|origOrderId`, after a `#` header.
    The real file is a zipped set of fixed-width files; this is the documented simplification both sides read."""
    out = ["#txnType|orderId|queryId|txnAmt|currencyCode|respCode|txnTime|origOrderId"]
    for line in lines:
        order, refund = line.order, line.refund
        if refund is None:
            txn_type, query_id, order_id = "01", order.trade_no, order.out_trade_no
            txn_time, orig = str(order.extra.get("txnTime", "")) or fmt(line.at, "%Y%m%d%H%M%S"), ""
        else:
            txn_type = "31" if refund.extra.get("kind") == "void" else "04"
            query_id, order_id = refund.refund_no, refund.out_refund_no
            txn_time, orig = str(refund.extra.get("txnTime", "")) or fmt(line.at, "%Y%m%d%H%M%S"), order.out_trade_no
        response = "01" if line.status_differs else "00"
        out.append("|".join([txn_type, order_id, query_id, str(line.amount), "156", response, txn_time, orig]))
    return "".join(f"{row}\n" for row in out)


CARD_COLUMNS = ["type", "id", "reference", "authorization", "amount", "currency", "status", "created"]


def render_card(lines: list[Line]) -> str:
    """One CSV row per payment (id = authorization, reference = our out_trade_no) or refund (id = refund,
    reference = our out_refund_no, authorization = the refunded authorization)."""
    rows = [CARD_COLUMNS]
    for line in lines:
        order, refund = line.order, line.refund
        status = "failed" if line.status_differs else "succeeded"
        created = fmt(line.at, "%Y-%m-%dT%H:%M:%SZ", UTC)
        if refund is None:
            row = ["payment", order.trade_no, order.out_trade_no, order.trade_no]
        else:
            row = ["refund", refund.refund_no, refund.out_refund_no, order.trade_no]
        rows.append([*row, str(line.amount), order.currency, status, created])
    return _csv(rows)
