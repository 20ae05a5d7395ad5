"""The JSON shapes of WeChat Pay v3 transactions and refunds (answers and decrypted callback resources)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channelsim.common import digits, rfc3339
from channelsim.store import Order, Refund

if TYPE_CHECKING:
    from channelsim.wechatpay import WechatPay

STATE_DESC = {
    "SUCCESS": "支付成功",
    "NOTPAY": "未支付",
    "CLOSED": "已关闭",
    "REFUND": "转入退款",
    "PAYERROR": "支付失败",
}


def transaction_view(provider: WechatPay, order: Order, flags: set[str]) -> dict[str, Any]:
    """A transaction as the query API answers it (and as TRANSACTION.SUCCESS carries it, with `flags` applied)."""
    state = provider.status_of(order)
    delta = 1 if "wrong_amount" in flags else 0
    currency = "USD" if "wrong_currency" in flags else "CNY"
    amount: dict[str, Any] = {"total": order.amount + delta, "currency": currency}
    view: dict[str, Any] = {
        "appid": provider.appid,
        "mchid": "19" + digits(8) if "wrong_app_id" in flags else provider.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_type": order.extra.get("trade_type", "NATIVE"),
        "trade_state": state,
        "trade_state_desc": STATE_DESC.get(state, state),
        "attach": order.extra.get("attach", ""),
        "payer": {"openid": order.extra.get("openid", "")},
        "amount": amount,
    }
    if order.status == "failed":
        view["trade_state_desc"] = f"支付失败 ({order.fail_code})"
    if order.status == "paid":
        view.update(transaction_id=order.trade_no, bank_type="OTHERS", success_time=rfc3339(order.paid_at))
        amount.update(payer_total=order.paid_amount + delta, payer_currency=currency)
    return view


def refund_view(order: Order, refund: Refund) -> dict[str, Any]:
    """A refund as the refund and refund-query APIs answer it."""
    view: dict[str, Any] = {
        "refund_id": refund.refund_no,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.trade_no,
        "out_trade_no": order.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": rfc3339(refund.created_at),
        "funds_account": "AVAILABLE",
        "status": {"pending": "PROCESSING", "succeeded": "SUCCESS"}.get(refund.status, "ABNORMAL"),
        "amount": {
            "total": order.amount,
            "refund": refund.amount,
            "payer_total": order.paid_amount,
            "payer_refund": refund.amount,
            "settlement_total": order.paid_amount,
            "settlement_refund": refund.amount,
            "discount_refund": 0,
            "currency": "CNY",
            "refund_fee": 0,
        },
    }
    if refund.done_at is not None:
        view["success_time"] = rfc3339(refund.done_at)
    return view


def refund_resource(provider: WechatPay, order: Order, refund: Refund, flags: set[str]) -> dict[str, Any]:
    """The decrypted resource of a REFUND.SUCCESS callback."""
    delta = 1 if "wrong_amount" in flags else 0
    amount: dict[str, Any] = {
        "total": order.amount,
        "refund": refund.amount + delta,
        "payer_total": order.paid_amount,
        "payer_refund": refund.amount + delta,
    }
    if "wrong_currency" in flags:
        amount["currency"] = "USD"  # real refund callbacks carry no currency; this one claims the wrong one
    return {
        "mchid": "19" + digits(8) if "wrong_app_id" in flags else provider.mchid,
        "out_trade_no": order.out_trade_no,
        "transaction_id": order.trade_no,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_no,
        "refund_status": "SUCCESS",
        "success_time": rfc3339(refund.done_at),
        "user_received_account": "支付用户零钱",
        "amount": amount,
    }
