"""Alipay: signed gateway calls, signed answers, the trade_status_sync notification, refunds, query, close."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

from tests.channelsim.clients import alipay as call
from tests.channelsim.conftest import Receiver, Simulator, load_private, load_public
from tests.channelsim.signing import alipay_params, alipay_response, sign, sorted_query, verify


def platform(sim: Simulator) -> Any:
    return load_public(sim.merchant["alipay"]["platform_public_key"])


def new_order(sim: Simulator, receiver: Receiver, amount: str = "10.00") -> tuple[str, str]:
    out = "A" + uuid.uuid4().hex[:20]
    path = f"/alipay/{out}"
    body, _text, _sign = call(
        sim,
        "alipay.trade.precreate",
        {"out_trade_no": out, "total_amount": amount, "subject": "course"},
        notify_url=receiver.url(path),
    )
    assert body["code"] == "10000", body
    return out, path


def test_signed_precreate_is_accepted_and_the_answer_verifies(sim: Simulator, receiver: Receiver) -> None:
    out = "A" + uuid.uuid4().hex[:20]
    body, text, signature = call(
        sim,
        "alipay.trade.precreate",
        {"out_trade_no": out, "total_amount": "12.34", "subject": "课程"},
        notify_url=receiver.url("/unused"),
    )
    assert body["code"] == "10000" and body["msg"] == "Success"
    assert body["out_trade_no"] == out and body["qr_code"].startswith("https://qr.alipay.com/")
    assert signature is not None and verify(platform(sim), text.encode(), signature)
    assert not verify(platform(sim), text.replace(out, out + "x").encode(), signature)


def test_a_wrongly_signed_request_is_refused(sim: Simulator) -> None:
    conf = sim.merchant["alipay"]
    params = alipay_params(
        conf["app_id"], load_private(conf["merchant_private_key"]), "alipay.trade.query", {"out_trade_no": "whatever"}
    )
    params["biz_content"] = '{"out_trade_no":"tampered"}'
    response = sim.http.post("/alipay/gateway.do", data=params)
    body, _text, signature = alipay_response(response.text, "alipay.trade.query")
    assert (body["code"], body["sub_code"]) == ("40002", "isv.invalid-signature")
    assert signature is None


def test_malformed_and_unknown_calls_get_alipay_errors(sim: Simulator) -> None:
    response = sim.http.post(
        "/alipay/gateway.do", content=b"\xff\xfe=%%%", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200 and '"code":"40002"' in response.text
    assert '"sub_code":"isv.invalid-parameter"' in response.text
    response = sim.http.post("/alipay/gateway.do", data={"app_id": "x"})
    assert '"sub_code":"isv.missing-method"' in response.text
    response = sim.http.post("/alipay/gateway.do", data={"method": "alipay.no.such"})
    assert '"error_response"' in response.text and "isv.invalid-method" in response.text


def test_auto_pay_sends_a_signed_notification(sim: Simulator, receiver: Receiver) -> None:
    out, path = new_order(sim, receiver, "10.00")
    got = receiver.wait(path)
    assert len(got) == 1
    fields = dict(parse_qsl(got[0].body.decode(), keep_blank_values=True))
    assert fields["trade_status"] == "TRADE_SUCCESS" and fields["out_trade_no"] == out
    assert fields["total_amount"] == "10.00" and fields["app_id"] == sim.merchant["alipay"]["app_id"]
    assert fields["notify_type"] == "trade_status_sync" and fields["sign_type"] == "RSA2"
    content = sorted_query(fields, ("sign", "sign_type")).encode()
    assert verify(platform(sim), content, fields["sign"])
    order = sim.wait_order("alipay", out, lambda o: o["notifications"]["acknowledged"] == 1)
    assert order["status"] == "paid" and order["notifications"]["acknowledged"] == 1


def test_query_after_pay_then_partial_refunds_never_above_the_paid_amount(sim: Simulator, receiver: Receiver) -> None:
    out, path = new_order(sim, receiver, "10.00")
    receiver.wait(path)
    body, text, signature = call(sim, "alipay.trade.query", {"out_trade_no": out})
    assert body["trade_status"] == "TRADE_SUCCESS" and body["total_amount"] == "10.00"
    assert signature and verify(platform(sim), text.encode(), signature)

    first, _, _ = call(
        sim, "alipay.trade.refund", {"out_trade_no": out, "refund_amount": "3.00", "out_request_no": "r1"}
    )
    assert (first["code"], first["fund_change"], first["refund_fee"]) == ("10000", "Y", "3.00")
    again, _, _ = call(
        sim, "alipay.trade.refund", {"out_trade_no": out, "refund_amount": "3.00", "out_request_no": "r1"}
    )
    assert (again["fund_change"], again["refund_fee"]) == ("N", "3.00")
    too_much, _, _ = call(
        sim, "alipay.trade.refund", {"out_trade_no": out, "refund_amount": "7.01", "out_request_no": "r2"}
    )
    assert (too_much["code"], too_much["sub_code"]) == ("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
    second, _, _ = call(
        sim, "alipay.trade.refund", {"out_trade_no": out, "refund_amount": "7.00", "out_request_no": "r2"}
    )
    assert second["refund_fee"] == "10.00"

    status, _, _ = call(sim, "alipay.trade.fastpay.refund.query", {"out_trade_no": out, "out_request_no": "r1"})
    assert (status["refund_status"], status["refund_amount"]) == ("REFUND_SUCCESS", "3.00")
    unknown, _, _ = call(sim, "alipay.trade.fastpay.refund.query", {"out_trade_no": out, "out_request_no": "r9"})
    assert unknown["code"] == "10000" and "refund_amount" not in unknown

    notes = receiver.wait(path, 3)
    refunds = [dict(parse_qsl(n.body.decode())) for n in notes[1:]]
    assert [(r["out_biz_no"], r["refund_fee"]) for r in refunds] == [("r1", "3.00"), ("r2", "10.00")]
    assert refunds[-1]["trade_status"] == "TRADE_CLOSED"
    closed, _, _ = call(sim, "alipay.trade.query", {"out_trade_no": out})
    assert closed["trade_status"] == "TRADE_CLOSED"


def test_unknown_trade_and_paying_twice(sim: Simulator, receiver: Receiver) -> None:
    missing, _, _ = call(sim, "alipay.trade.query", {"out_trade_no": "nope-" + uuid.uuid4().hex})
    assert (missing["code"], missing["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")
    out, path = new_order(sim, receiver, "1.00")
    receiver.wait(path)
    again, _, _ = call(sim, "alipay.trade.precreate", {"out_trade_no": out, "total_amount": "1.00", "subject": "x"})
    assert again["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"
    close, _, _ = call(sim, "alipay.trade.close", {"out_trade_no": out})
    assert close["sub_code"] == "ACQ.TRADE_STATUS_ERROR"


def test_page_pay_is_a_signed_browser_url(sim: Simulator) -> None:
    conf = sim.merchant["alipay"]
    out = "P" + uuid.uuid4().hex[:20]
    params = alipay_params(
        conf["app_id"],
        load_private(conf["merchant_private_key"]),
        "alipay.trade.page.pay",
        {"out_trade_no": out, "total_amount": "5.00", "subject": "course", "product_code": "FAST_INSTANT_TRADE_PAY"},
    )
    page = httpx.get(f"{conf['gateway_url']}?{urlencode(params)}", trust_env=False)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and out in page.text
    assert sim.order("alipay", out)["amount"] == 500
    params["sign"] = sign(load_private(conf["merchant_private_key"]), b"something else")
    refused = httpx.get(f"{conf['gateway_url']}?{urlencode(params)}", trust_env=False)
    assert "isv.invalid-signature" in refused.text
