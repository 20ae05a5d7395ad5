"""WeChat Pay API v3: Authorization-signed calls, Wechatpay-* signed answers, AES-GCM callbacks, refunds, close."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.channelsim.clients import wechat as call
from tests.channelsim.conftest import Receiver, Simulator, load_private, load_public
from tests.channelsim.signing import wechat_authorization, wechat_decrypt, wechat_signed


def signed(sim: Simulator, response: httpx.Response) -> bool:
    platform = load_public(sim.merchant["wechatpay"]["platform_public_key"])
    return response.headers["Wechatpay-Serial"] == sim.merchant["wechatpay"]["platform_serial_no"] and wechat_signed(
        response.headers, response.text, platform
    )


def apiv3(sim: Simulator) -> bytes:
    return Path(sim.merchant["wechatpay"]["apiv3_key_path"]).read_bytes().strip()


def native(sim: Simulator, receiver: Receiver, total: int = 1000) -> tuple[str, str]:
    conf = sim.merchant["wechatpay"]
    out = "W" + uuid.uuid4().hex[:20]
    path = f"/wechat/{out}"
    response = call(
        sim,
        "POST",
        "/v3/pay/transactions/native",
        {
            "appid": conf["appid"],
            "mchid": conf["mchid"],
            "description": "课程",
            "out_trade_no": out,
            "notify_url": receiver.url(path),
            "amount": {"total": total, "currency": "CNY"},
        },
    )
    assert response.status_code == 200, response.text
    return out, path


def test_signed_order_is_accepted_and_the_answer_verifies(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["wechatpay"]
    out = "W" + uuid.uuid4().hex[:20]
    response = call(
        sim,
        "POST",
        "/v3/pay/transactions/native",
        {
            "appid": conf["appid"],
            "mchid": conf["mchid"],
            "description": "course",
            "out_trade_no": out,
            "notify_url": receiver.url("/unused"),
            "amount": {"total": 1234, "currency": "CNY"},
        },
    )
    assert response.status_code == 200
    assert response.json()["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert signed(sim, response)
    platform = load_public(conf["platform_public_key"])
    assert not wechat_signed(response.headers, response.text + " ", platform)


def test_jsapi_returns_a_prepay_id(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["wechatpay"]
    response = call(
        sim,
        "POST",
        "/v3/pay/transactions/jsapi",
        {
            "appid": conf["appid"],
            "mchid": conf["mchid"],
            "description": "course",
            "out_trade_no": "J" + uuid.uuid4().hex[:20],
            "notify_url": receiver.url("/unused"),
            "amount": {"total": 1},
            "payer": {"openid": "oUser"},
        },
    )
    assert response.status_code == 200 and response.json()["prepay_id"].startswith("wx")
    missing_payer = call(
        sim,
        "POST",
        "/v3/pay/transactions/jsapi",
        {
            "appid": conf["appid"],
            "mchid": conf["mchid"],
            "description": "course",
            "out_trade_no": "J" + uuid.uuid4().hex[:20],
            "notify_url": receiver.url("/unused"),
            "amount": {"total": 1},
        },
    )
    assert (missing_payer.status_code, missing_payer.json()["code"]) == (400, "PARAM_ERROR")


def test_wrong_signature_and_bad_bodies_are_refused_in_wechat_format(sim: Simulator) -> None:
    conf = sim.merchant["wechatpay"]
    tampered = call(sim, "POST", "/v3/pay/transactions/native", {"mchid": conf["mchid"]}, tamper=True)
    assert (tampered.status_code, tampered.json()["code"]) == (401, "SIGN_ERROR")
    assert signed(sim, tampered)
    unsigned = sim.http.get(f"/wechatpay/v3/pay/transactions/out-trade-no/x?mchid={conf['mchid']}")
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "SIGN_ERROR")
    not_json = sim.http.post(
        "/wechatpay/v3/pay/transactions/native",
        content=b"{oops",
        headers={
            "Authorization": wechat_authorization(
                conf["mchid"],
                conf["merchant_serial_no"],
                load_private(conf["merchant_private_key"]),
                "POST",
                "/v3/pay/transactions/native",
                "{oops",
            )
        },
    )
    assert (not_json.status_code, not_json.json()["code"]) == (400, "PARAM_ERROR")


def test_auto_pay_sends_an_encrypted_signed_callback(sim: Simulator, receiver: Receiver) -> None:
    out, path = native(sim, receiver, 1000)
    got = receiver.wait(path)
    assert len(got) == 1
    note = got[0]
    platform = load_public(sim.merchant["wechatpay"]["platform_public_key"])
    assert wechat_signed(note.headers, note.body.decode(), platform)
    assert note.headers["Wechatpay-Serial"] == sim.merchant["wechatpay"]["platform_serial_no"]
    envelope = json.loads(note.body)
    assert envelope["event_type"] == "TRANSACTION.SUCCESS" and envelope["resource_type"] == "encrypt-resource"
    assert envelope["resource"]["algorithm"] == "AEAD_AES_256_GCM"
    transaction = wechat_decrypt(apiv3(sim), envelope["resource"])
    assert transaction["out_trade_no"] == out and transaction["trade_state"] == "SUCCESS"
    assert transaction["amount"]["total"] == 1000 and transaction["mchid"] == sim.merchant["wechatpay"]["mchid"]


def test_query_after_pay_then_a_partial_refund(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["wechatpay"]
    out, path = native(sim, receiver, 1000)
    receiver.wait(path)
    query = call(sim, "GET", f"/v3/pay/transactions/out-trade-no/{out}?mchid={conf['mchid']}")
    assert query.status_code == 200 and signed(sim, query)
    assert query.json()["trade_state"] == "SUCCESS" and query.json()["transaction_id"]

    refund_path = f"/wechat/refund/{out}"
    refund = call(
        sim,
        "POST",
        "/v3/refund/domestic/refunds",
        {
            "out_trade_no": out,
            "out_refund_no": f"R{out}",
            "notify_url": receiver.url(refund_path),
            "amount": {"refund": 300, "total": 1000, "currency": "CNY"},
        },
    )
    assert refund.status_code == 200 and refund.json()["status"] == "PROCESSING"
    too_much = call(
        sim,
        "POST",
        "/v3/refund/domestic/refunds",
        {"out_trade_no": out, "out_refund_no": f"S{out}", "amount": {"refund": 701, "total": 1000, "currency": "CNY"}},
    )
    assert (too_much.status_code, too_much.json()["code"]) == (400, "INVALID_REQUEST")

    got = receiver.wait(refund_path)
    assert len(got) == 1
    envelope = json.loads(got[0].body)
    assert envelope["event_type"] == "REFUND.SUCCESS"
    resource = wechat_decrypt(apiv3(sim), envelope["resource"])
    assert (resource["out_refund_no"], resource["refund_status"], resource["amount"]["refund"]) == (
        f"R{out}",
        "SUCCESS",
        300,
    )
    status = call(sim, "GET", f"/v3/refund/domestic/refunds/R{out}")
    assert status.status_code == 200 and status.json()["status"] == "SUCCESS" and signed(sim, status)
    query = call(sim, "GET", f"/v3/pay/transactions/out-trade-no/{out}?mchid={conf['mchid']}")
    assert query.json()["trade_state"] == "REFUND"


def test_unknown_order_and_refund(sim: Simulator) -> None:
    conf = sim.merchant["wechatpay"]
    missing = call(sim, "GET", f"/v3/pay/transactions/out-trade-no/NOPE{uuid.uuid4().hex[:8]}?mchid={conf['mchid']}")
    assert (missing.status_code, missing.json()["code"]) == (404, "ORDER_NOT_EXIST") and signed(sim, missing)
    refund = call(sim, "GET", "/v3/refund/domestic/refunds/none-such")
    assert (refund.status_code, refund.json()["code"]) == (404, "RESOURCE_NOT_EXISTS")


def test_platform_certificate_download_decrypts(sim: Simulator) -> None:
    response = call(sim, "GET", "/v3/certificates")
    assert response.status_code == 200 and signed(sim, response)
    item = response.json()["data"][0]
    assert item["serial_no"] == sim.merchant["wechatpay"]["platform_serial_no"]
    resource = item["encrypt_certificate"]
    pem = AESGCM(apiv3(sim)).decrypt(
        resource["nonce"].encode(), base64.b64decode(resource["ciphertext"]), b"certificate"
    )
    assert pem.decode() == Path(sim.merchant["wechatpay"]["platform_certificate"]).read_text()
