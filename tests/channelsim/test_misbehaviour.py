"""Misbehaviour: 5xx, latency, withheld answers, declines, and every callback mode; notification retries."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.channelsim import clients
from tests.channelsim.conftest import Receiver, Simulator, load_public
from tests.channelsim.signing import (
    card_signature_ok,
    sorted_query,
    unionpay_verify,
    verify,
    wechat_decrypt,
    wechat_signed,
)


def alipay_order(sim: Simulator, receiver: Receiver, amount: str = "10.00") -> tuple[str, str]:
    out = "A" + uuid.uuid4().hex[:20]
    path = f"/mis/alipay/{out}"
    body, _, _ = clients.alipay(
        sim,
        "alipay.trade.precreate",
        {"out_trade_no": out, "total_amount": amount, "subject": "x"},
        notify_url=receiver.url(path),
    )
    assert body["code"] == "10000"
    return out, path


def alipay_signed(sim: Simulator, fields: dict[str, str]) -> bool:
    platform = load_public(sim.merchant["alipay"]["platform_public_key"])
    return verify(platform, sorted_query(fields, ("sign", "sign_type")).encode(), fields["sign"])


def test_http_5xx_answers_the_next_n_calls_in_the_provider_format(sim: Simulator) -> None:
    conf = sim.merchant["wechatpay"]
    sim.misbehave("wechatpay", http_5xx=2)
    url = f"/v3/pay/transactions/out-trade-no/none?mchid={conf['mchid']}"
    answers = [clients.wechat(sim, "GET", url) for _ in range(3)]
    assert [a.status_code for a in answers] == [500, 500, 404]
    assert answers[0].json()["code"] == "SYSTEM_ERROR"
    sim.misbehave("alipay", http_5xx=1)
    response = sim.http.post("/alipay/gateway.do", data={"method": "alipay.trade.query"})
    assert response.status_code == 503 and "isp.unknow-error" in response.text


def test_latency_delays_answers(sim: Simulator) -> None:
    sim.misbehave("card", latency_ms=3000)
    with pytest.raises(httpx.ReadTimeout):
        clients.card(sim, "GET", "/authorizations?reference=x", timeout=0.3)
    sim.reset()
    assert clients.card(sim, "GET", "/authorizations?reference=x", timeout=5).status_code == 200


def test_timeout_withholds_the_answer_but_processes_the_request(sim: Simulator, receiver: Receiver) -> None:
    reference = "C" + uuid.uuid4().hex[:20]
    token = clients.card_token(sim)
    sim.misbehave("card", timeout=True)
    with pytest.raises(httpx.ReadTimeout):
        clients.card(
            sim,
            "POST",
            "/authorizations",
            {"token": token, "amount": 100, "currency": "usd", "reference": reference},
            timeout=1.0,
        )
    sim.reset()
    found = clients.card(sim, "GET", f"/authorizations?reference={reference}").json()["data"]
    assert [a["status"] for a in found] == ["captured"]


def test_duplicate_callbacks_are_the_same_notification_twice(sim: Simulator, receiver: Receiver) -> None:
    sim.misbehave("alipay", callback=["duplicate"])
    _out, path = alipay_order(sim, receiver)
    got = receiver.wait(path, 2)
    assert len(got) == 2
    first, second = (dict(parse_qsl(n.body.decode())) for n in got)
    assert first["notify_id"] == second["notify_id"] and alipay_signed(sim, first) and alipay_signed(sim, second)


def test_forged_callbacks_do_not_verify(sim: Simulator, receiver: Receiver) -> None:
    sim.misbehave("wechatpay", callback=["forged"])
    out = "W" + uuid.uuid4().hex[:20]
    path = f"/mis/wechat/{out}"
    clients.wechat_native(sim, out, 100, receiver.url(path))
    note = receiver.wait(path)[0]
    platform = load_public(sim.merchant["wechatpay"]["platform_public_key"])
    assert not wechat_signed(note.headers, note.body.decode(), platform)

    sim.misbehave("card", callback=["forged"])
    path = f"/mis/card/{uuid.uuid4().hex}"
    clients.card_authorize(sim, "C" + uuid.uuid4().hex[:20], 100, receiver.url(path))
    note = receiver.wait(path)[0]
    secret = Path(sim.merchant["card"]["webhook_secret_path"]).read_text().strip()
    assert not card_signature_ok(note.headers["Card-Signature"], note.body, secret)


def test_wrong_amount_currency_and_merchant_are_signed_but_wrong(sim: Simulator, receiver: Receiver) -> None:
    sim.misbehave("unionpay", callback=["wrong_amount", "wrong_app_id"])
    order_id = "U" + uuid.uuid4().hex[:20]
    path = f"/mis/unionpay/{order_id}"
    clients.unionpay_consume(sim, order_id, 1000, receiver.url(path))
    fields = dict(parse_qsl(receiver.wait(path)[0].body.decode()))
    assert unionpay_verify(fields, load_public(sim.merchant["unionpay"]["platform_public_key"]))
    assert fields["txnAmt"] == "1001" and fields["merId"] != sim.merchant["unionpay"]["mer_id"]

    sim.misbehave("card", callback=["wrong_currency"])
    path = f"/mis/card/{uuid.uuid4().hex}"
    clients.card_authorize(sim, "C" + uuid.uuid4().hex[:20], 100, receiver.url(path))
    note = receiver.wait(path)[0]
    secret = Path(sim.merchant["card"]["webhook_secret_path"]).read_text().strip()
    assert card_signature_ok(note.headers["Card-Signature"], note.body, secret)
    assert json.loads(note.body)["data"]["object"]["currency"] != "usd"

    sim.misbehave("wechatpay", callback=["wrong_app_id"])
    out = "W" + uuid.uuid4().hex[:20]
    path = f"/mis/wechat/{out}"
    clients.wechat_native(sim, out, 100, receiver.url(path))
    key = Path(sim.merchant["wechatpay"]["apiv3_key_path"]).read_bytes().strip()
    resource = wechat_decrypt(key, json.loads(receiver.wait(path)[0].body)["resource"])
    assert resource["mchid"] != sim.merchant["wechatpay"]["mchid"] and resource["out_trade_no"] == out


def test_out_of_order_sends_the_refund_notice_before_the_pay_notice(sim: Simulator, receiver: Receiver) -> None:
    sim.misbehave("alipay", callback=["out_of_order"])
    out, path = alipay_order(sim, receiver)
    sim.wait_order("alipay", out, lambda o: o["status"] == "paid")
    refund, _, _ = clients.alipay(
        sim, "alipay.trade.refund", {"out_trade_no": out, "refund_amount": "1.00", "out_request_no": "r1"}
    )
    assert refund["fund_change"] == "Y"
    got = [dict(parse_qsl(n.body.decode())) for n in receiver.wait(path, 2)]
    assert len(got) == 2
    assert got[0].get("out_biz_no") == "r1" and "out_biz_no" not in got[1]
    assert all(alipay_signed(sim, fields) for fields in got)


def test_never_sends_no_callback(sim: Simulator, receiver: Receiver) -> None:
    sim.misbehave("card", callback=["never"])
    reference = "C" + uuid.uuid4().hex[:20]
    clients.card_authorize(sim, reference, 100, receiver.url(f"/mis/card/{reference}"))
    notes = sim.notifications("card", reference)
    assert [(n["status"], n["attempts"]) for n in notes] == [("suppressed", 0)]
    assert sim.order("card", reference)["notifications"]["sent"] == 0


def test_delayed_callback_still_arrives(sim: Simulator, receiver: Receiver) -> None:
    settings = sim.misbehave("alipay", callback=["delay_ms=300"])
    assert settings["callback_delay_ms"] == 300 and settings["callback"] == ["delay_ms"]
    out, path = alipay_order(sim, receiver)
    assert len(receiver.wait(path)) == 1
    order = sim.wait_order("alipay", out, lambda o: o["notifications"]["acknowledged"] == 1)
    assert order["notifications"]["acknowledged"] == 1


def test_unacknowledged_notifications_are_retried_and_logged(sim: Simulator, receiver: Receiver) -> None:
    out = "A" + uuid.uuid4().hex[:20]
    path = f"/mis/alipay/{out}"
    receiver.script(path, [(500, "oops"), (200, "fail")])
    clients.alipay(
        sim,
        "alipay.trade.precreate",
        {"out_trade_no": out, "total_amount": "1.00", "subject": "x"},
        notify_url=receiver.url(path),
    )
    got = receiver.wait(path, 3)
    assert len(got) == 3 and got[0].body == got[2].body
    order = sim.wait_order("alipay", out, lambda o: o["notifications"]["acknowledged"] == 1)
    assert order["notifications"]["attempts"] == 3
    log = sim.notifications("alipay", out)[0]["attempt_log"]
    assert [a["http_status"] for a in log] == [500, 200, 200]


def test_decline_fails_the_next_payment_of_a_wallet(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["wechatpay"]
    sim.misbehave("wechatpay", decline="BANK_ERROR")
    out = "W" + uuid.uuid4().hex[:20]
    clients.wechat_native(sim, out, 100, receiver.url(f"/mis/wechat/{out}"))
    order = sim.wait_order("wechatpay", out, lambda o: o["status"] != "pending")
    assert (order["status"], order["fail_code"]) == ("failed", "BANK_ERROR")
    query = clients.wechat(sim, "GET", f"/v3/pay/transactions/out-trade-no/{out}?mchid={conf['mchid']}")
    assert query.json()["trade_state"] == "PAYERROR"
    assert sim.misbehave("wechatpay")["decline"] is None


def test_bad_misbehaviour_settings_are_refused(sim: Simulator) -> None:
    assert sim.control("POST", "/misbehave/card", json={"callback": ["sideways"]}).status_code == 400
    assert sim.control("POST", "/misbehave/card", json={"latency_ms": -1}).status_code == 400
    assert sim.control("POST", "/misbehave/nope", json={}).status_code == 400
    assert sim.control("POST", "/misbehave/card", content=b"{").status_code == 400
