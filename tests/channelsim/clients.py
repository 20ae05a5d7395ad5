"""Minimal merchant clients of the four simulated providers, built on tests/channelsim/signing.py."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.channelsim.conftest import Simulator, load_private
from tests.channelsim.signing import (
    BEIJING,
    alipay_params,
    alipay_response,
    unionpay_parse,
    unionpay_sign,
    wechat_authorization,
)


def alipay(sim: Simulator, method: str, biz: dict[str, Any], **extra: str) -> tuple[dict[str, Any], str, str | None]:
    conf = sim.merchant["alipay"]
    params = alipay_params(conf["app_id"], load_private(conf["merchant_private_key"]), method, biz, **extra)
    response = sim.http.post("/alipay/gateway.do", data=params)
    assert response.status_code == 200, response.text
    return alipay_response(response.text, method)


def wechat(
    sim: Simulator,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    tamper: bool = False,
    timeout: float | None = None,
) -> httpx.Response:
    conf = sim.merchant["wechatpay"]
    text = "" if body is None else json.dumps(body, ensure_ascii=False)
    auth = wechat_authorization(
        conf["mchid"], conf["merchant_serial_no"], load_private(conf["merchant_private_key"]), method, url, text
    )
    sent = text + " " if tamper else text
    headers = {"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"}
    if timeout is None:
        return sim.http.request(method, "/wechatpay" + url, content=sent.encode(), headers=headers)
    return sim.http.request(method, "/wechatpay" + url, content=sent.encode(), headers=headers, timeout=timeout)


def wechat_native(sim: Simulator, out: str, total: int, notify_url: str) -> httpx.Response:
    conf = sim.merchant["wechatpay"]
    return wechat(
        sim,
        "POST",
        "/v3/pay/transactions/native",
        {
            "appid": conf["appid"],
            "mchid": conf["mchid"],
            "description": "课程",
            "out_trade_no": out,
            "notify_url": notify_url,
            "amount": {"total": total, "currency": "CNY"},
        },
    )


def unionpay(sim: Simulator, endpoint: str, fields: dict[str, str], tamper: bool = False) -> dict[str, str]:
    conf = sim.merchant["unionpay"]
    params = {
        "version": "5.1.0",
        "encoding": "UTF-8",
        "signMethod": "01",
        "certId": conf["merchant_cert_id"],
        "merId": conf["mer_id"],
        "accessType": "0",
        "bizType": "000201",
        "txnTime": datetime.now(BEIJING).strftime("%Y%m%d%H%M%S"),
        **fields,
    }
    signed = unionpay_sign(params, load_private(conf["merchant_private_key"]))
    if tamper:
        signed["txnAmt"] = "1"
    path = "/unionpay/filedownload" if endpoint == "filedownload" else f"/unionpay/gateway/api/{endpoint}"
    response = sim.http.post(path, data=signed)
    assert response.status_code == 200, response.text
    return unionpay_parse(response.text)


def unionpay_consume(sim: Simulator, order_id: str, amount: int, back_url: str) -> dict[str, str]:
    return unionpay(
        sim,
        "appTransReq.do",
        {
            "txnType": "01",
            "txnSubType": "01",
            "channelType": "08",
            "orderId": order_id,
            "txnAmt": str(amount),
            "currencyCode": "156",
            "backUrl": back_url,
        },
    )


def card(
    sim: Simulator,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    key: str | None = None,
    timeout: float | None = None,
) -> httpx.Response:
    secret = Path(sim.merchant["card"]["api_key_path"]).read_text().strip()
    headers = {"Authorization": f"Bearer {secret}"}
    if key:
        headers["Idempotency-Key"] = key
    if timeout is None:
        return sim.http.request(method, f"/card/v1{path}", json=body, headers=headers)
    return sim.http.request(method, f"/card/v1{path}", json=body, headers=headers, timeout=timeout)


def card_token(sim: Simulator, number: str = "4242424242424242") -> str:
    response = card(sim, "POST", "/tokens", {"number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123"})
    assert response.status_code == 200, response.text
    assert response.json()["card"]["last4"] == number[-4:]
    return str(response.json()["id"])


def card_authorize(
    sim: Simulator,
    reference: str,
    amount: int,
    notification_url: str,
    number: str = "4242424242424242",
    capture: bool = True,
    **kwargs: Any,
) -> httpx.Response:
    return card(
        sim,
        "POST",
        "/authorizations",
        {
            "token": card_token(sim, number),
            "amount": amount,
            "currency": "usd",
            "capture": capture,
            "reference": reference,
            "notification_url": notification_url,
        },
        **kwargs,
    )
