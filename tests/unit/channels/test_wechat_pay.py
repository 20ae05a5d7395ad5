"""WeChat Pay API v3 translator: builders, answers, callbacks and bills, byte for byte, with no network.

Every signature is checked against a message this file builds itself from the v3 rule, and cross-checked with the
maintained `wechatpayv3` SDK (utils.rsa_sign / rsa_verify / aes_decrypt / build_authorization); RSA PKCS#1 v1.5 is
deterministic, so the SDK's signature and ours must be identical bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from wechatpayv3 import utils as sdk

from workers.channels.base import (
    AttemptStatus,
    HttpCall,
    HttpReply,
    NotificationKind,
    NotificationRejected,
    Order,
    Provider,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundOrder,
    RefundStatus,
    Scene,
)
from workers.channels.wechat_pay import WechatPayConfig, WechatPayProvider
from workers.channels.wechat_pay import bill as wechat_bill
from workers.domain.types import Method

BASE = "http://127.0.0.1:8090/wechatpay"  # a dev base URL with a path of its own: signatures are relative to it
MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001122334455667788990011"
APIV3_KEY = b"0123456789abcdefghijABCDEFGHIJ01"
NOTIFY_URL = "https://pay.example.com/notify/wechat"
CHINA = timezone(timedelta(hours=8))
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
AUTH = re.compile(
    r'WECHATPAY2-SHA256-RSA2048 mchid="(?P<mchid>[^"]+)",nonce_str="(?P<nonce>[^"]+)",'
    r'signature="(?P<signature>[^"]+)",timestamp="(?P<timestamp>\d+)",serial_no="(?P<serial>[^"]+)"'
)


@dataclass(frozen=True)
class Keys:
    merchant: rsa.RSAPrivateKey
    platform: rsa.RSAPrivateKey
    stranger: rsa.RSAPrivateKey
    directory: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("wechat-keys")
    merchant, platform, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    (directory / "apiclient_key.pem").write_bytes(
        merchant.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (directory / "pub_key.pem").write_bytes(
        platform.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (directory / "apiv3.key").write_bytes(APIV3_KEY + b"\n")
    return Keys(merchant, platform, stranger, directory)


def load_config(keys: Keys, platform_file: str = "pub_key.pem") -> WechatPayConfig:
    d = keys.directory
    return WechatPayConfig.load(
        BASE,
        MCHID,
        APPID,
        d / "apiclient_key.pem",
        SERIAL,
        d / platform_file,
        PLATFORM_SERIAL,
        d / "apiv3.key",
        NOTIFY_URL,
    )


@pytest.fixture(scope="module")
def provider(keys: Keys) -> WechatPayProvider:
    return WechatPayProvider(load_config(keys))


# ---- the test's own implementation of the v3 rules ---------------------------------------------------------


def sign(key: rsa.RSAPrivateKey, message: str) -> str:
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def verifies(key: rsa.RSAPrivateKey, message: str, signature: str) -> bool:
    try:
        key.public_key().verify(base64.b64decode(signature), message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def check_request_signature(keys: Keys, call: HttpCall, canonical: str) -> dict[str, str]:
    """Verify the Authorization of `call` over the message built here, and that the SDK signs the same bytes."""
    match = AUTH.fullmatch(dict(call.headers)["Authorization"])
    assert match is not None
    auth = match.groupdict()
    assert (auth["mchid"], auth["serial"], auth["timestamp"]) == (MCHID, SERIAL, str(int(NOW.timestamp())))
    assert re.fullmatch(r"[0-9A-F]{32}", auth["nonce"])
    message = f"{call.method}\n{canonical}\n{auth['timestamp']}\n{auth['nonce']}\n{call.body.decode()}\n"
    assert verifies(keys.merchant, message, auth["signature"])
    assert sdk.rsa_sign(keys.merchant, message) == auth["signature"]
    return auth


def signed_reply(
    keys: Keys,
    status: int,
    body: bytes,
    *,
    key: rsa.RSAPrivateKey | None = None,
    serial: str = PLATFORM_SERIAL,
    timestamp: str | None = None,
    nonce: str = "f6b1c9a1e3d24c2b",
) -> HttpReply:
    """An answer or callback as WeChat Pay sends it: signed over timestamp, nonce and the exact body."""
    timestamp = timestamp or str(int(NOW.timestamp()))
    signature = sign(key or keys.platform, f"{timestamp}\n{nonce}\n{body.decode()}\n")
    headers = {
        "wechatpay-timestamp": timestamp,
        "wechatpay-nonce": nonce,
        "wechatpay-signature": signature,
        "wechatpay-serial": serial,
        "wechatpay-signature-type": "WECHATPAY2-SHA256-RSA2048",
        "content-type": "application/json",
    }
    return HttpReply(status, headers, body)


def reply_json(keys: Keys, status: int, payload: dict[str, Any], **kwargs: Any) -> HttpReply:
    return signed_reply(keys, status, json.dumps(payload, ensure_ascii=False).encode(), **kwargs)


def order(scene: Scene = Scene.QR, payer: str = "") -> Order:
    return Order(
        out_trade_no="att_0001",
        amount_minor=1230,
        currency="CNY",
        subject="课程 Python 入门",
        notify_url=NOTIFY_URL,
        scene=scene,
        payer=payer,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
    )


REFUND = RefundOrder(
    out_trade_no="att_0001",
    trade_no="4200000001202405011234567890",
    out_refund_no="rf_0001",
    amount_minor=500,
    total_minor=1230,
    currency="CNY",
    reason="course cancelled",
    notify_url=NOTIFY_URL,
    created_at=NOW,
)


# ---- building calls ------------------------------------------------------------------------------------------


def test_native_create_is_a_signed_json_post_relative_to_the_api_root(provider: WechatPayProvider, keys: Keys) -> None:
    call = provider.create(order(), NOW)
    assert isinstance(call, HttpCall)
    assert (call.method, call.url, call.idempotent, call.purpose) == (
        "POST",
        BASE + "/v3/pay/transactions/native",
        True,
        "create",
    )
    headers = dict(call.headers)
    assert (headers["Accept"], headers["Content-Type"]) == ("application/json", "application/json")
    assert headers["User-Agent"]
    assert json.loads(call.body) == {
        "appid": APPID,
        "mchid": MCHID,
        "description": "课程 Python 入门",
        "out_trade_no": "att_0001",
        "time_expire": "2024-05-01T20:30:00+08:00",
        "notify_url": NOTIFY_URL,
        "amount": {"total": 1230, "currency": "CNY"},
    }
    check_request_signature(keys, call, "/v3/pay/transactions/native")


def test_authorization_header_is_what_the_sdk_builds(
    provider: WechatPayProvider, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = provider.create(order(), NOW)
    assert isinstance(call, HttpCall)
    auth = check_request_signature(keys, call, "/v3/pay/transactions/native")
    monkeypatch.setattr(sdk.time, "time", NOW.timestamp)  # the SDK reads the clock; we pass `now`
    rebuilt = sdk.build_authorization(
        "/v3/pay/transactions/native",
        "POST",
        MCHID,
        SERIAL,
        keys.merchant,
        data=call.body.decode(),
        nonce_str=auth["nonce"],
    )
    assert rebuilt == dict(call.headers)["Authorization"]


def test_jsapi_needs_the_openid_and_other_web_scenes_use_native(provider: WechatPayProvider, keys: Keys) -> None:
    call = provider.create(order(Scene.IN_APP, payer="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"), NOW)
    assert isinstance(call, HttpCall) and call.url == BASE + "/v3/pay/transactions/jsapi"
    assert json.loads(call.body)["payer"] == {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
    check_request_signature(keys, call, "/v3/pay/transactions/jsapi")
    for scene in (Scene.PAGE, Scene.WAP):
        web = provider.create(order(scene), NOW)
        assert isinstance(web, HttpCall) and web.url.endswith("/v3/pay/transactions/native")
    with pytest.raises(ValueError, match="openid"):
        provider.create(order(Scene.IN_APP), NOW)
    with pytest.raises(ValueError, match="scene"):
        provider.create(order(Scene.CARD), NOW)
    with pytest.raises(ValueError, match="CNY"):
        provider.create(replace(order(), currency="USD"), NOW)


@pytest.mark.parametrize(
    ("build", "method", "canonical", "body", "purpose"),
    [
        (
            lambda p: p.query("att_0001", NOW),
            "GET",
            f"/v3/pay/transactions/out-trade-no/att_0001?mchid={MCHID}",
            None,
            "query",
        ),
        (
            lambda p: p.close("att_0001", "", NOW),
            "POST",
            "/v3/pay/transactions/out-trade-no/att_0001/close",
            {"mchid": MCHID},
            "close",
        ),
        (
            lambda p: p.refund(REFUND, NOW),
            "POST",
            "/v3/refund/domestic/refunds",
            {
                "out_trade_no": "att_0001",
                "out_refund_no": "rf_0001",
                "reason": "course cancelled",
                "notify_url": NOTIFY_URL,
                "amount": {"refund": 500, "total": 1230, "currency": "CNY"},
            },
            "refund",
        ),
        (lambda p: p.refund_query(REFUND, NOW), "GET", "/v3/refund/domestic/refunds/rf_0001", None, "refund_query"),
        (
            lambda p: p.statement(date(2024, 4, 30), NOW),
            "GET",
            "/v3/bill/tradebill?bill_date=2024-04-30&bill_type=ALL",
            None,
            "statement",
        ),
    ],
)
def test_every_builder(
    provider: WechatPayProvider, keys: Keys, build: Any, method: str, canonical: str, body: Any, purpose: str
) -> None:
    call = build(provider)
    assert (call.method, call.url, call.purpose, call.idempotent) == (method, BASE + canonical, purpose, True)
    assert (json.loads(call.body) if call.body else None) == body
    assert ("Content-Type" in dict(call.headers)) == (body is not None)
    check_request_signature(keys, call, canonical)


def test_nonces_are_fresh_for_every_call(provider: WechatPayProvider) -> None:
    nonces = {AUTH.fullmatch(dict(provider.query("att_0001", NOW).headers)["Authorization"])["nonce"] for _ in range(5)}  # type: ignore[index]
    assert len(nonces) == 5


# ---- reading answers ---------------------------------------------------------------------------------------------


def test_create_answers(provider: WechatPayProvider, keys: Keys) -> None:
    native = provider.read_create(order(), reply_json(keys, 200, {"code_url": "weixin://wxpay/bizpayurl?pr=abc"}))
    assert (native.status, native.qr_code, native.merchant_id) == (
        AttemptStatus.PENDING,
        "weixin://wxpay/bizpayurl?pr=abc",
        MCHID,
    )
    jsapi = provider.read_create(order(Scene.IN_APP, "o1"), reply_json(keys, 200, {"prepay_id": "wx01"}))
    assert (jsapi.status, jsapi.prepay_id, jsapi.qr_code) == (AttemptStatus.PENDING, "wx01", "")
    refused = provider.read_create(order(), reply_json(keys, 400, {"code": "PARAM_ERROR", "message": "参数错误"}))
    assert (refused.status, refused.failure_reason) == (AttemptStatus.FAILED, "PARAM_ERROR: 参数错误")
    closed = provider.read_create(order(), reply_json(keys, 400, {"code": "ORDER_CLOSED", "message": "订单已关闭"}))
    assert closed.status is AttemptStatus.CLOSED


def test_the_sdk_verifies_the_answers_this_file_signs(keys: Keys) -> None:
    reply = reply_json(keys, 200, {"code_url": "weixin://wxpay/bizpayurl?pr=abc"})
    h = reply.headers
    args = (h["wechatpay-timestamp"], h["wechatpay-nonce"], reply.body.decode(), h["wechatpay-signature"])
    assert sdk.rsa_verify(*args, keys.platform.public_key())
    assert not sdk.rsa_verify(*args, keys.stranger.public_key())


def _untrusted_create_answers(keys: Keys) -> list[HttpReply]:
    good = reply_json(keys, 200, {"code_url": "weixin://wxpay/bizpayurl?pr=abc"})
    unsigned = {k: v for k, v in good.headers.items() if k != "wechatpay-signature"}
    return [
        HttpReply(200, unsigned, good.body),
        reply_json(keys, 200, {"code_url": "weixin://x"}, key=keys.stranger),
        reply_json(keys, 200, {"code_url": "weixin://x"}, serial="PUB_KEY_ID_SOMEONE_ELSE"),
        HttpReply(200, good.headers, good.body.replace(b"abc", b"evil")),
        signed_reply(keys, 200, b"not json"),
        reply_json(keys, 200, {"prepay_id": "wx01"}),  # no code_url for a native order
        reply_json(keys, 500, {"code": "SYSTEM_ERROR", "message": "系统错误"}),
        reply_json(keys, 429, {"code": "FREQUENCY_LIMITED", "message": "频率超限"}),
        reply_json(keys, 401, {"code": "SIGN_ERROR", "message": "签名错误"}),
        reply_json(keys, 400, {"code": "ORDERPAID", "message": "订单已支付"}),
        reply_json(keys, 400, {"code": "SOMETHING_NEW", "message": "?"}),
        HttpReply(400, {}, b'{"code":"PARAM_ERROR","message":"unsigned"}'),
        HttpReply(502, {}, b"<html>bad gateway</html>"),
    ]


def test_untrusted_or_unknown_create_answers_raise(provider: WechatPayProvider, keys: Keys) -> None:
    for reply in _untrusted_create_answers(keys):
        with pytest.raises(ProviderAnswerError):
            provider.read_create(order(), reply)


def transaction(trade_state: str, **changes: Any) -> dict[str, Any]:
    data = {
        "appid": APPID,
        "mchid": MCHID,
        "out_trade_no": "att_0001",
        "transaction_id": "4200000001202405011234567890",
        "trade_type": "NATIVE",
        "trade_state": trade_state,
        "trade_state_desc": "支付失败" if trade_state == "PAYERROR" else "",
        "success_time": "2024-05-01T20:05:06+08:00",
        "amount": {"total": 1230, "payer_total": 1230, "currency": "CNY", "payer_currency": "CNY"},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("trade_state", "status"),
    [
        ("SUCCESS", AttemptStatus.SUCCEEDED),
        ("REFUND", AttemptStatus.SUCCEEDED),
        ("NOTPAY", AttemptStatus.PENDING),
        ("USERPAYING", AttemptStatus.PENDING),
        ("CLOSED", AttemptStatus.CLOSED),
        ("REVOKED", AttemptStatus.CLOSED),
        ("PAYERROR", AttemptStatus.FAILED),
    ],
)
def test_query_maps_trade_state(
    provider: WechatPayProvider, keys: Keys, trade_state: str, status: AttemptStatus
) -> None:
    state = provider.read_query("att_0001", reply_json(keys, 200, transaction(trade_state)))
    assert (state.status, state.amount_minor, state.currency, state.merchant_id) == (status, 1230, "CNY", MCHID)
    assert state.trade_no == "4200000001202405011234567890"
    succeeded = status is AttemptStatus.SUCCEEDED
    assert state.paid_at == (datetime(2024, 5, 1, 20, 5, 6, tzinfo=CHINA) if succeeded else None)
    assert state.failure_reason == ("支付失败" if status is AttemptStatus.FAILED else "")


def test_query_not_found_and_untrusted(provider: WechatPayProvider, keys: Keys) -> None:
    missing = provider.read_query(
        "att_0001", reply_json(keys, 404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
    )
    assert (missing.status, missing.failure_reason) == (AttemptStatus.FAILED, "not found")
    for reply in (
        HttpReply(404, {}, b'{"code":"ORDER_NOT_EXIST","message":"unsigned"}'),
        reply_json(keys, 200, transaction("SUCCESS", out_trade_no="att_9999")),
        reply_json(keys, 200, transaction("SUCCESS", amount={"total": "12.30", "currency": "CNY"})),
        reply_json(keys, 200, transaction("MAYBE")),
    ):
        with pytest.raises(ProviderAnswerError):
            provider.read_query("att_0001", reply)


def test_close_answers(provider: WechatPayProvider, keys: Keys) -> None:
    assert provider.read_close("att_0001", signed_reply(keys, 204, b"")).status is AttemptStatus.CLOSED
    paid = reply_json(keys, 400, {"code": "ORDERPAID", "message": "订单已支付"})
    assert provider.read_close("att_0001", paid).status is AttemptStatus.SUCCEEDED
    closed = reply_json(keys, 400, {"code": "ORDER_CLOSED", "message": "订单已关闭"})
    assert provider.read_close("att_0001", closed).status is AttemptStatus.CLOSED
    with pytest.raises(ProviderAnswerError):
        provider.read_close("att_0001", HttpReply(204, {}, b""))  # unsigned
    with pytest.raises(ProviderAnswerError):
        provider.read_close("att_0001", reply_json(keys, 500, {"code": "SYSTEM_ERROR", "message": "?"}))


def refund_answer(status: str, **changes: Any) -> dict[str, Any]:
    data = {
        "refund_id": "50000000382019052709732678859",
        "out_refund_no": "rf_0001",
        "transaction_id": "4200000001202405011234567890",
        "out_trade_no": "att_0001",
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": "2024-05-01T21:00:00+08:00",
        "status": status,
        "amount": {"total": 1230, "refund": 500, "payer_total": 1230, "payer_refund": 500, "currency": "CNY"},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("refund_status", "status"),
    [
        ("SUCCESS", RefundStatus.SUCCEEDED),
        ("PROCESSING", RefundStatus.PENDING),
        ("ABNORMAL", RefundStatus.FAILED),
        ("CLOSED", RefundStatus.FAILED),
    ],
)
def test_refund_and_refund_query_answers(
    provider: WechatPayProvider, keys: Keys, refund_status: str, status: RefundStatus
) -> None:
    for read in (provider.read_refund, provider.read_refund_query):
        refund = read(REFUND, reply_json(keys, 200, refund_answer(refund_status)))
        assert refund == ProviderRefund(
            status,
            "rf_0001",
            refund_no="50000000382019052709732678859",
            amount_minor=500,
            currency="CNY",
            failure_reason=refund_status if status is RefundStatus.FAILED else "",
        )


def test_refund_refusals_and_unknowns(provider: WechatPayProvider, keys: Keys) -> None:
    refused = provider.read_refund(REFUND, reply_json(keys, 403, {"code": "NOT_ENOUGH", "message": "余额不足"}))
    assert (refused.status, refused.failure_reason) == (RefundStatus.FAILED, "NOT_ENOUGH: 余额不足")
    missing = provider.read_refund_query(
        REFUND, reply_json(keys, 404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"})
    )
    assert (missing.status, missing.failure_reason) == (RefundStatus.FAILED, "not found")
    for reply in (
        reply_json(keys, 500, {"code": "SYSTEM_ERROR", "message": "系统错误"}),
        reply_json(keys, 200, refund_answer("SUCCESS", out_refund_no="rf_9999")),
        reply_json(keys, 200, refund_answer("SUCCESS", out_trade_no="att_9999")),
        reply_json(keys, 200, refund_answer("SOMEHOW")),
        reply_json(keys, 200, refund_answer("SUCCESS"), key=keys.stranger),
    ):
        with pytest.raises(ProviderAnswerError):
            provider.read_refund(REFUND, reply)


# ---- statements ----------------------------------------------------------------------------------------------

HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
PAYMENT_ROW = (
    f"2024-04-30 10:00:05,{APPID},{MCHID},0,,4200000001202404301111111111,att_0001,oUpF8uMuAJO,NATIVE,SUCCESS,"
    "OTHERS,CNY,12.30,0.00,0,0,0.00,0.00,,,课程,,0.07000,0.60%,12.30,0.00,"
)
REFUND_ROW = (
    f"2024-04-30 18:30:00,{APPID},{MCHID},0,,4200000001202404301111111111,att_0001,oUpF8uMuAJO,NATIVE,REFUND,"
    "OTHERS,CNY,0.00,0.00,50000000382019052709732678859,rf_0001,5.00,0.00,ORIGINAL,SUCCESS,课程,,-0.03000,0.60%,"
    "0.00,5.00,"
)
SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def backticked(row: str) -> str:
    return ",".join("`" + cell for cell in row.split(","))


def bill_file(count: str = "2", rows: tuple[str, ...] = (PAYMENT_ROW, REFUND_ROW)) -> bytes:
    lines = [HEADER, *(backticked(r) for r in rows), SUMMARY, backticked(f"{count},12.30,5.00,0.00,0.04000,12.30,5.00")]
    return "\ufeff".encode() + "\r\n".join(lines).encode() + b"\r\n"


def test_tradebill_answer_leads_to_a_signed_get_of_the_download_url(provider: WechatPayProvider, keys: Keys) -> None:
    url = BASE + "/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2"
    payload = {"download_url": url, "hash_type": "SHA1", "hash_value": hashlib.sha1(bill_file()).hexdigest()}
    call = provider.read_statement(date(2024, 4, 30), reply_json(keys, 200, payload), NOW)
    assert isinstance(call, HttpCall)
    assert (call.method, call.url, call.body, call.purpose, call.idempotent) == ("GET", url, b"", "statement", True)
    check_request_signature(keys, call, "/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2")


def test_download_url_outside_the_api_root_is_not_given_our_signature(provider: WechatPayProvider, keys: Keys) -> None:
    payload = {
        "download_url": "https://evil.example/v3/billdownload/file?token=x",
        "hash_type": "SHA1",
        "hash_value": "0",
    }
    with pytest.raises(ProviderAnswerError, match="API root"):
        provider.read_statement(date(2024, 4, 30), reply_json(keys, 200, payload), NOW)


def test_no_statement_is_empty_once_the_bill_is_due(provider: WechatPayProvider, keys: Keys) -> None:
    reply = reply_json(keys, 400, {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"})
    assert provider.read_statement(date(2024, 4, 30), reply, NOW) == []
    with pytest.raises(ProviderAnswerError, match="not due"):
        provider.read_statement(date(2024, 4, 30), reply, datetime(2024, 5, 1, 0, 30, tzinfo=UTC))
    creating = reply_json(keys, 400, {"code": "STATEMENT_CREATING", "message": "账单生成中"})
    with pytest.raises(ProviderAnswerError):
        provider.read_statement(date(2024, 4, 30), creating, NOW)


def test_bill_file_is_parsed(provider: WechatPayProvider) -> None:
    body = bill_file()
    lines = provider.read_statement(
        date(2024, 4, 30), HttpReply(200, {}, body), NOW, expected_sha1=hashlib.sha1(body).hexdigest().upper()
    )
    assert isinstance(lines, list)
    assert [(x.kind, x.out_trade_no, x.out_refund_no, x.amount_minor, x.status) for x in lines] == [
        (NotificationKind.PAYMENT, "att_0001", "", 1230, "SUCCESS"),
        (NotificationKind.REFUND, "att_0001", "rf_0001", 500, "SUCCESS"),
    ]
    assert lines[0].trade_no == "4200000001202404301111111111" and lines[0].currency == "CNY"
    assert (lines[0].refund_no, lines[1].refund_no) == ("", "50000000382019052709732678859")
    assert lines[1].at == datetime(2024, 4, 30, 18, 30, tzinfo=CHINA)


@pytest.mark.parametrize(
    "body",
    [
        bill_file(count="3"),  # the summary counts a line the file does not have
        bill_file().rsplit(SUMMARY.encode(), 1)[0],  # truncated before the summary
        bill_file(
            rows=(PAYMENT_ROW.replace("12.30,0.00,0,0", "12.345,0.00,0,0").replace(",12.30,0.00,", ",12.345,0.00,"),),
            count="1",
        ),
        bill_file(rows=(PAYMENT_ROW.replace("2024-04-30 10:00:05", "30/04/2024"),), count="1"),
        HEADER.replace("商户订单号", "订单号").encode() + b"\n" + SUMMARY.encode() + b"\n`0,`0.00\n",
    ],
)
def test_unreadable_bills_raise(body: bytes) -> None:
    with pytest.raises(ProviderAnswerError):
        wechat_bill.parse(body)


def test_bill_hash_mismatch_raises(provider: WechatPayProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="SHA-1"):
        provider.read_statement(date(2024, 4, 30), HttpReply(200, {}, bill_file()), NOW, expected_sha1="00" * 20)


# ---- callbacks ---------------------------------------------------------------------------------------------------


def seal(
    resource: dict[str, Any] | bytes, *, key: bytes = APIV3_KEY, nonce: str = "fdasflkja484", ad: str = "transaction"
) -> dict[str, str]:
    plaintext = resource if isinstance(resource, bytes) else json.dumps(resource, ensure_ascii=False).encode()
    ciphertext = base64.b64encode(AESGCM(key).encrypt(nonce.encode(), plaintext, ad.encode())).decode()
    return {
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": ciphertext,
        "associated_data": ad,
        "nonce": nonce,
    }


def callback(event: str, resource: dict[str, Any] | bytes, **seal_args: Any) -> bytes:
    envelope = {
        "id": "EV-2018022511223320873",
        "create_time": "2024-05-01T20:05:07+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event,
        "summary": "支付成功",
        "resource": seal(resource, **seal_args),
    }
    return json.dumps(envelope, ensure_ascii=False).encode()


def test_genuine_payment_callback(provider: WechatPayProvider, keys: Keys) -> None:
    body = callback("TRANSACTION.SUCCESS", transaction("SUCCESS"))
    resource = json.loads(body)["resource"]
    # The SDK decrypts the same resource to the same transaction.
    plain = sdk.aes_decrypt(resource["nonce"], resource["ciphertext"], resource["associated_data"], APIV3_KEY.decode())
    assert json.loads(plain) == transaction("SUCCESS")
    reply = signed_reply(keys, 200, body, nonce="a8c2e1f0d6b54c3e")
    note = provider.read_notification(
        {k.title(): v for k, v in reply.headers.items()}, body, NOW + timedelta(seconds=299)
    )
    assert (note.kind, note.notification_id, note.nonce) == (
        NotificationKind.PAYMENT,
        "EV-2018022511223320873",
        "a8c2e1f0d6b54c3e",
    )
    assert note.payment == ProviderState(
        AttemptStatus.SUCCEEDED,
        "att_0001",
        trade_no="4200000001202405011234567890",
        amount_minor=1230,
        currency="CNY",
        merchant_id=MCHID,
        paid_at=datetime(2024, 5, 1, 20, 5, 6, tzinfo=CHINA),
    )


@pytest.mark.parametrize(
    ("event", "refund_status", "status"),
    [
        ("REFUND.SUCCESS", "SUCCESS", RefundStatus.SUCCEEDED),
        ("REFUND.ABNORMAL", "ABNORMAL", RefundStatus.FAILED),
        ("REFUND.CLOSED", "CLOSED", RefundStatus.FAILED),
    ],
)
def test_refund_callbacks(
    provider: WechatPayProvider, keys: Keys, event: str, refund_status: str, status: RefundStatus
) -> None:
    resource = {
        "mchid": MCHID,
        "out_trade_no": "att_0001",
        "transaction_id": "4200000001202405011234567890",
        "out_refund_no": "rf_0001",
        "refund_id": "50000000382019052709732678859",
        "refund_status": refund_status,
        "success_time": "2024-05-01T21:00:00+08:00",
        "amount": {"total": 1230, "refund": 500, "payer_total": 1230, "payer_refund": 500},
        "user_received_account": "支付用户零钱",
    }
    body = callback(event, resource, ad="refund")
    note = provider.read_notification(signed_reply(keys, 200, body).headers, body, NOW)
    assert (note.kind, note.out_trade_no, note.payment) == (NotificationKind.REFUND, "att_0001", None)
    assert note.refund is not None
    assert (note.refund.status, note.refund.out_refund_no, note.refund.amount_minor, note.refund.currency) == (
        status,
        "rf_0001",
        500,
        "CNY",
    )
    assert (note.refund.refund_no, note.refund.merchant_id) == ("50000000382019052709732678859", MCHID)


def _rejected_callbacks(keys: Keys) -> list[tuple[dict[str, str], bytes, str]]:
    body = callback("TRANSACTION.SUCCESS", transaction("SUCCESS"))
    good = signed_reply(keys, 200, body).headers
    tampered = body.replace(b"EV-2018022511223320873", b"EV-2018022511223320874")
    stale = str(int(NOW.timestamp()) - 301)
    future = str(int(NOW.timestamp()) + 301)
    undecryptable = callback("TRANSACTION.SUCCESS", transaction("SUCCESS"), key=b"x" * 32)
    cases: list[tuple[bytes, str, dict[str, Any]]] = [
        (tampered, "bad_signature", {"headers": good}),
        (body, "bad_signature", {"key": keys.stranger}),
        (body, "unknown_serial", {"serial": "PUB_KEY_ID_SOMEONE_ELSE"}),
        (body, "stale_timestamp", {"timestamp": stale}),
        (body, "stale_timestamp", {"timestamp": future}),
        (undecryptable, "decrypt_failed", {}),
        (b"{not json", "malformed", {}),
        (callback("TRANSACTION.SUCCESS", b"not json inside"), "malformed", {}),
        (callback("TRANSACTION.CLOSED", transaction("CLOSED")), "malformed", {}),
        (callback("TRANSACTION.SUCCESS", transaction("SUCCESS", amount={"total": 12.3})), "malformed", {}),
        (json.dumps({"id": "EV-1", "event_type": "TRANSACTION.SUCCESS"}).encode(), "malformed", {}),
    ]
    result = []
    for case_body, reason, options in cases:
        headers = options.pop("headers", None) or dict(signed_reply(keys, 200, case_body, **options).headers)
        result.append((dict(headers), case_body, reason))
    unsigned = {k: v for k, v in good.items() if k != "wechatpay-signature"}
    result.append((unsigned, body, "bad_signature"))
    return result


def test_forged_stale_undecryptable_or_malformed_callbacks_are_rejected(
    provider: WechatPayProvider, keys: Keys
) -> None:
    for headers, body, reason in _rejected_callbacks(keys):
        with pytest.raises(NotificationRejected) as caught:
            provider.read_notification(headers, body, NOW)
        assert caught.value.reason == reason, (reason, body[:60])


def test_acknowledge(provider: WechatPayProvider) -> None:
    assert provider.acknowledge(True) == HttpReply(204, {}, b"")
    refused = provider.acknowledge(False)
    assert (refused.status, refused.headers["content-type"]) == (500, "application/json")
    assert json.loads(refused.body)["code"] == "FAIL" and json.loads(refused.body)["message"]


# ---- configuration -------------------------------------------------------------------------------------------


def test_config_takes_a_platform_certificate_and_checks_its_values(keys: Keys) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(keys.platform.public_key())
        .serial_number(0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(keys.platform, hashes.SHA256())
    )
    (keys.directory / "platform_cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    config = load_config(keys, "platform_cert.pem")
    assert config.platform_public_key.public_numbers() == keys.platform.public_key().public_numbers()
    assert config.apiv3_key == APIV3_KEY
    checked: Provider = WechatPayProvider(config)  # mypy checks the structural match with base.Provider here
    assert (checked.method, checked.merchant_id) == (Method.WECHAT_PAY, MCHID)
    with pytest.raises(ValueError, match="32 bytes"):
        replace(config, apiv3_key=b"short")
    with pytest.raises(ValueError, match="base_url"):
        replace(config, base_url=BASE + "/")
    assert "RSAPrivateKey" not in repr(config) and APIV3_KEY.decode() not in repr(config)
