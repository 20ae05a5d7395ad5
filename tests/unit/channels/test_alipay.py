"""Alipay openapi translator: builders, answers, notifications and bills, byte for byte, with no network.

Every signature is checked against a string-to-sign this file builds itself from Alipay's rule, and cross-checked
with the maintained python-alipay-sdk (`alipay` package), whose RSA2 signing is deterministic (PKCS#1 v1.5), so the
two signatures must be identical bytes.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from alipay import AliPay
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from workers.channels.alipay import AlipayConfig, AlipayProvider
from workers.channels.alipay import bill as alipay_bill
from workers.channels.alipay import signature as alipay_signature
from workers.channels.alipay.money import parse_yuan, to_yuan
from workers.channels.base import (
    AttemptStatus,
    HttpCall,
    HttpReply,
    NotificationKind,
    NotificationRejected,
    Order,
    Provider,
    ProviderAnswerError,
    ProviderState,
    RefundOrder,
    RefundStatus,
    Scene,
)
from workers.domain.types import Method

GATEWAY = "http://127.0.0.1:8090/alipay/gateway.do"
APP_ID = "2021000000000001"
SELLER_ID = "2088000000000001"
NOTIFY_URL = "https://pay.example.com/notify/alipay"
CHINA = timezone(timedelta(hours=8))
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # 20:00:00 in Beijing


@dataclass(frozen=True)
class Keys:
    app: rsa.RSAPrivateKey
    alipay: rsa.RSAPrivateKey
    stranger: rsa.RSAPrivateKey
    app_pem: str
    alipay_public_pem: str
    app_key_path: Path
    alipay_public_path: Path


def _pem_private(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("alipay-keys")
    app, ali, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    app_key_path = directory / "app_private_key.pem"
    app_key_path.write_bytes(_pem_private(app))
    # Alipay's console hands its public key out as one bare base64 line (DER, no PEM armour): load that form.
    der = ali.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    alipay_public_path = directory / "alipay_public_key.txt"
    alipay_public_path.write_bytes(base64.b64encode(der) + b"\n")
    return Keys(
        app, ali, stranger, _pem_private(app).decode(), _pem_public(ali).decode(), app_key_path, alipay_public_path
    )


@pytest.fixture(scope="module")
def provider(keys: Keys) -> AlipayProvider:
    config = AlipayConfig.load(GATEWAY, APP_ID, SELLER_ID, keys.app_key_path, keys.alipay_public_path, NOTIFY_URL)
    return AlipayProvider(config)


@pytest.fixture(scope="module")
def sdk(keys: Keys) -> AliPay:
    return AliPay(appid=APP_ID, app_private_key_string=keys.app_pem, alipay_public_key_string=keys.alipay_public_pem)


# ---- the test's own implementation of Alipay's rules ---------------------------------------------------------


def string_to_sign(params: dict[str, str], excluded: tuple[str, ...] = ("sign",)) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in excluded and v != "")


def rsa2(key: rsa.RSAPrivateKey, text: str) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def verifies(key: rsa.RSAPrivateKey, text: str, sign: str) -> bool:
    try:
        key.public_key().verify(base64.b64decode(sign), text.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def form(call: HttpCall) -> dict[str, str]:
    pairs = parse_qsl(call.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert len(dict(pairs)) == len(pairs)
    return dict(pairs)


def answer(
    keys: Keys, api_method: str, inner: str | dict[str, Any], *, key: rsa.RSAPrivateKey | None = None, status: int = 200
) -> HttpReply:
    """What Alipay sends back: the raw `*_response` text and a signature over exactly that text."""
    raw = inner if isinstance(inner, str) else json.dumps(inner, ensure_ascii=False)
    sign = rsa2(key or keys.alipay, raw)
    body = '{"' + api_method.replace(".", "_") + '_response":' + raw + ',"sign":"' + sign + '"}'
    return HttpReply(status, {"content-type": "application/json;charset=utf-8"}, body.encode())


def order(scene: Scene = Scene.QR, amount: int = 1230) -> Order:
    return Order(
        out_trade_no="att_0001",
        amount_minor=amount,
        currency="CNY",
        subject="课程 Python 入门",
        notify_url=NOTIFY_URL,
        scene=scene,
        payer="",
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
    )


REFUND = RefundOrder(
    out_trade_no="att_0001",
    trade_no="2024050122001400000000000001",
    out_refund_no="rf_0001",
    amount_minor=500,
    total_minor=1230,
    currency="CNY",
    reason="course cancelled",
    notify_url=NOTIFY_URL,
    created_at=NOW,
)


# ---- amounts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fen", "yuan"), [(1, "0.01"), (1230, "12.30"), (100, "1.00"), (123456789, "1234567.89")])
def test_amounts_convert_exactly_both_ways(fen: int, yuan: str) -> None:
    assert to_yuan(fen) == yuan
    assert parse_yuan(yuan) == fen


@pytest.mark.parametrize("text", ["1.234", "1e3", "-1.00", "12.3", "12", "1.00 ", "+1.00", "01.00", ".50", "1,00", ""])
def test_amounts_that_are_not_exactly_two_decimals_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="two decimals"):
        parse_yuan(text)


def test_negative_amounts_only_where_allowed_and_never_sent() -> None:
    assert parse_yuan("-5.00", allow_negative=True) == -500
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            to_yuan(bad)  # type: ignore[arg-type]


# ---- building calls ----------------------------------------------------------------------------------------------


def test_precreate_is_a_signed_form_post_with_the_common_parameters(provider: AlipayProvider, keys: Keys) -> None:
    call = provider.create(order(), NOW)
    assert isinstance(call, HttpCall)
    assert (call.method, call.url, call.idempotent, call.purpose) == ("POST", GATEWAY, True, "create")
    assert dict(call.headers)["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"
    params = form(call)
    assert {k: v for k, v in params.items() if k not in ("biz_content", "sign")} == {
        "app_id": APP_ID,
        "method": "alipay.trade.precreate",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": "2024-05-01 20:00:00",
        "version": "1.0",
        "notify_url": NOTIFY_URL,
    }
    assert params["biz_content"] == (
        '{"out_trade_no":"att_0001","total_amount":"12.30","subject":"课程 Python 入门",'
        '"product_code":"FACE_TO_FACE_PAYMENT","time_expire":"2024-05-01 20:30:00"}'
    )
    assert verifies(keys.app, string_to_sign(params), params["sign"])


def test_string_to_sign_sorts_and_drops_sign_and_empty_values() -> None:
    params = {"method": "alipay.trade.query", "app_id": APP_ID, "notify_url": "", "sign": "x", "biz_content": "{}"}
    expected = f"app_id={APP_ID}&biz_content={{}}&method=alipay.trade.query"
    assert alipay_signature.content_to_sign(params) == expected == string_to_sign(params)


def test_request_signature_is_what_the_alipay_sdk_computes(provider: AlipayProvider, sdk: AliPay) -> None:
    params = form(provider.query("att_0001", NOW))
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    # The SDK's own signing of the same sorted parameters gives the same bytes: RSA PKCS#1 v1.5 is deterministic.
    assert sdk._sign("&".join(f"{k}={v}" for k, v in sorted(unsigned.items()))) == params["sign"]
    assert sdk.sign_data(dict(unsigned)).endswith("&sign=" + quote(params["sign"], safe=""))


@pytest.mark.parametrize(
    ("scene", "api_method", "product_code"),
    [
        (Scene.PAGE, "alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
        (Scene.WAP, "alipay.trade.wap.pay", "QUICK_WAP_WAY"),
    ],
)
def test_page_and_wap_need_no_call_and_return_a_signed_redirect(
    provider: AlipayProvider, keys: Keys, scene: Scene, api_method: str, product_code: str
) -> None:
    state = provider.create(order(scene), NOW)
    assert isinstance(state, ProviderState)
    assert (state.status, state.out_trade_no, state.merchant_id) == (AttemptStatus.PENDING, "att_0001", APP_ID)
    assert state.pay_url.startswith(GATEWAY + "?")
    params = dict(parse_qsl(urlsplit(state.pay_url).query, strict_parsing=True))
    assert params["method"] == api_method
    assert json.loads(params["biz_content"])["product_code"] == product_code
    assert json.loads(params["biz_content"])["total_amount"] == "12.30"
    assert verifies(keys.app, string_to_sign(params), params["sign"])


def test_create_refuses_scenes_and_currencies_alipay_does_not_serve(provider: AlipayProvider) -> None:
    with pytest.raises(ValueError, match="scene"):
        provider.create(order(Scene.IN_APP), NOW)
    with pytest.raises(ValueError, match="CNY"):
        provider.create(replace(order(), currency="USD"), NOW)


@pytest.mark.parametrize(
    ("build", "api_method", "purpose", "biz"),
    [
        (lambda p: p.query("att_0001", NOW), "alipay.trade.query", "query", {"out_trade_no": "att_0001"}),
        (
            lambda p: p.close("att_0001", "2024050122001400000000000001", NOW),
            "alipay.trade.close",
            "close",
            {"out_trade_no": "att_0001", "trade_no": "2024050122001400000000000001"},
        ),
        (
            lambda p: p.refund(REFUND, NOW),
            "alipay.trade.refund",
            "refund",
            {
                "out_trade_no": "att_0001",
                "refund_amount": "5.00",
                "out_request_no": "rf_0001",
                "refund_reason": "course cancelled",
                "trade_no": "2024050122001400000000000001",
            },
        ),
        (
            lambda p: p.refund_query(REFUND, NOW),
            "alipay.trade.fastpay.refund.query",
            "refund_query",
            {"out_trade_no": "att_0001", "out_request_no": "rf_0001", "trade_no": "2024050122001400000000000001"},
        ),
        (
            lambda p: p.statement(date(2024, 4, 30), NOW),
            "alipay.data.dataservice.bill.downloadurl.query",
            "statement",
            {"bill_type": "trade", "bill_date": "2024-04-30"},
        ),
    ],
)
def test_every_builder_names_its_method_and_business_content(
    provider: AlipayProvider, keys: Keys, build: Any, api_method: str, purpose: str, biz: dict[str, str]
) -> None:
    call = build(provider)
    params = form(call)
    assert (call.method, call.url, call.purpose, call.idempotent) == ("POST", GATEWAY, purpose, True)
    assert params["method"] == api_method
    assert json.loads(params["biz_content"]) == biz
    assert "notify_url" not in params  # only calls that open a trade carry it
    assert verifies(keys.app, string_to_sign(params), params["sign"])


# ---- reading answers ---------------------------------------------------------------------------------------------


def test_precreate_answer_gives_the_qr_code(provider: AlipayProvider, keys: Keys, sdk: AliPay) -> None:
    # Alipay's JSON escapes slashes and spaces oddly: the signature covers those exact bytes, not a re-serialisation.
    raw = '{"code":"10000", "msg":"Success","out_trade_no":"att_0001","qr_code":"https:\\/\\/qr.alipay.com\\/bax01"}'
    reply = answer(keys, "alipay.trade.precreate", raw)
    state = provider.read_create(order(), reply)
    assert (state.status, state.qr_code, state.merchant_id) == (
        AttemptStatus.PENDING,
        "https://qr.alipay.com/bax01",
        APP_ID,
    )
    # The SDK locates and verifies the same signed text.
    text = reply.body.decode()
    assert sdk._get_string_to_be_signed(text, "alipay_trade_precreate_response") == raw
    assert sdk._verify_and_return_sync_response(text, "alipay_trade_precreate_response")["qr_code"] == state.qr_code


def test_signed_text_is_found_at_the_top_level_only() -> None:
    body = '{"sign":"c2ln","x":{"alipay_trade_query_response":{"code":"1"}},"alipay_trade_query_response":{"a":"}"}}'
    raw, sign = alipay_signature.signed_response(body, "alipay.trade.query")
    assert (raw, sign) == ('{"a":"}"}', "c2ln")
    with pytest.raises(ValueError, match="duplicate"):
        alipay_signature.signed_response(
            '{"sign":"a","sign":"b","alipay_trade_query_response":{}}', "alipay.trade.query"
        )


@pytest.mark.parametrize(
    ("inner", "status", "reason"),
    [
        (
            {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TOTAL_FEE_EXCEED", "sub_msg": "订单金额超限"},
            AttemptStatus.FAILED,
            "ACQ.TOTAL_FEE_EXCEED: 订单金额超限",
        ),
        (
            {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature"},
            AttemptStatus.FAILED,
            "isv.invalid-signature: Invalid Arguments",
        ),
        ({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_HAS_CLOSE"}, AttemptStatus.CLOSED, ""),
    ],
)
def test_precreate_refusals(
    provider: AlipayProvider, keys: Keys, inner: dict[str, str], status: AttemptStatus, reason: str
) -> None:
    state = provider.read_create(order(), answer(keys, "alipay.trade.precreate", inner))
    assert (state.status, state.failure_reason) == (status, reason)


def test_a_gateway_refusal_comes_as_error_response(provider: AlipayProvider, keys: Keys) -> None:
    raw = json.dumps({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-id"})
    body = '{"error_response":' + raw + ',"sign":"' + rsa2(keys.alipay, raw) + '"}'
    state = provider.read_create(order(), HttpReply(200, {}, body.encode()))
    assert state.status is AttemptStatus.FAILED and state.failure_reason.startswith("isv.invalid-app-id")


def _unknown_answers(keys: Keys) -> list[HttpReply]:
    ok = {"code": "10000", "msg": "Success", "out_trade_no": "att_0001", "qr_code": "https://qr.alipay.com/x"}
    good = answer(keys, "alipay.trade.precreate", ok)
    raw = json.dumps(ok)
    return [
        answer(keys, "alipay.trade.precreate", {"code": "20000", "msg": "Service Currently Unavailable"}),
        answer(keys, "alipay.trade.precreate", {"code": "40004", "sub_code": "ACQ.SYSTEM_ERROR"}),
        answer(keys, "alipay.trade.precreate", {"code": "40004", "sub_code": "ACQ.TRADE_HAS_SUCCESS"}),
        answer(keys, "alipay.trade.precreate", {"code": "20001", "sub_code": "isp.unknow-error"}),
        answer(keys, "alipay.trade.precreate", {"code": "10000", "msg": "Success"}),  # no qr_code
        answer(keys, "alipay.trade.precreate", {**ok, "out_trade_no": "att_9999"}),  # someone else's trade
        HttpReply(502, {}, good.body),
        HttpReply(200, {}, b"<html>busy</html>"),
        HttpReply(200, {}, b'{"alipay_trade_precreate_response":' + raw.encode() + b"}"),  # unsigned
        answer(keys, "alipay.trade.precreate", ok, key=keys.stranger),  # signed by someone else
        HttpReply(200, {}, good.body.replace(b"qr.alipay.com", b"qr.evil.example")),  # tampered after signing
        answer(keys, "alipay.trade.query", ok),  # the answer to another method
        HttpReply(200, {}, good.body + b" trailing"),
    ]


def test_unknown_or_untrusted_answers_raise(provider: AlipayProvider, keys: Keys) -> None:
    for reply in _unknown_answers(keys):
        with pytest.raises(ProviderAnswerError):
            provider.read_create(order(), reply)


@pytest.mark.parametrize(
    ("trade_status", "status"),
    [
        ("WAIT_BUYER_PAY", AttemptStatus.PENDING),
        ("TRADE_SUCCESS", AttemptStatus.SUCCEEDED),
        ("TRADE_FINISHED", AttemptStatus.SUCCEEDED),
        ("TRADE_CLOSED", AttemptStatus.CLOSED),
    ],
)
def test_query_maps_trade_status(
    provider: AlipayProvider, keys: Keys, trade_status: str, status: AttemptStatus
) -> None:
    inner = {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": "att_0001",
        "trade_no": "2024T1",
        "trade_status": trade_status,
        "total_amount": "12.30",
        "send_pay_date": "2024-05-01 20:05:06",
    }
    state = provider.read_query("att_0001", answer(keys, "alipay.trade.query", inner))
    assert (state.status, state.trade_no, state.amount_minor, state.currency) == (status, "2024T1", 1230, "CNY")
    assert state.merchant_id == APP_ID
    expected_paid = datetime(2024, 5, 1, 20, 5, 6, tzinfo=CHINA) if status is AttemptStatus.SUCCEEDED else None
    assert state.paid_at == expected_paid


def test_query_of_an_order_alipay_never_had_is_failed_not_found(provider: AlipayProvider, keys: Keys) -> None:
    inner = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "交易不存在"}
    state = provider.read_query("att_0001", answer(keys, "alipay.trade.query", inner))
    assert (state.status, state.failure_reason) == (AttemptStatus.FAILED, "not found")


@pytest.mark.parametrize(
    "inner",
    [
        {"code": "10000", "out_trade_no": "att_0001", "trade_status": "TRADE_SUCCESS", "total_amount": "12.345"},
        {"code": "10000", "out_trade_no": "att_0001", "trade_status": "TRADE_PAID_MAYBE", "total_amount": "1.00"},
        {"code": "40004", "sub_code": "ACQ.INVALID_PARAMETER"},
    ],
)
def test_query_answers_that_say_nothing_certain_raise(
    provider: AlipayProvider, keys: Keys, inner: dict[str, str]
) -> None:
    with pytest.raises(ProviderAnswerError):
        provider.read_query("att_0001", answer(keys, "alipay.trade.query", inner))


@pytest.mark.parametrize(
    ("inner", "status"),
    [
        ({"code": "10000", "msg": "Success", "out_trade_no": "att_0001", "trade_no": "T1"}, AttemptStatus.CLOSED),
        ({"code": "40004", "sub_code": "ACQ.TRADE_NOT_EXIST"}, AttemptStatus.CLOSED),
        ({"code": "40004", "sub_code": "ACQ.TRADE_HAS_SUCCESS"}, AttemptStatus.SUCCEEDED),
    ],
)
def test_close_answers(provider: AlipayProvider, keys: Keys, inner: dict[str, str], status: AttemptStatus) -> None:
    assert provider.read_close("att_0001", answer(keys, "alipay.trade.close", inner)).status is status


def test_close_status_error_is_ambiguous_and_left_to_a_query(provider: AlipayProvider, keys: Keys) -> None:
    # ACQ.TRADE_STATUS_ERROR also answers a second close of a closed trade: reading it as "paid" would invent money.
    inner = {"code": "40004", "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "交易状态不合法"}
    with pytest.raises(ProviderAnswerError):
        provider.read_close("att_0001", answer(keys, "alipay.trade.close", inner))


@pytest.mark.parametrize(("fund_change", "status"), [("Y", RefundStatus.SUCCEEDED), ("N", RefundStatus.PENDING)])
def test_refund_answer(provider: AlipayProvider, keys: Keys, fund_change: str, status: RefundStatus) -> None:
    inner = {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": "att_0001",
        "fund_change": fund_change,
        "refund_fee": "5.00",
    }
    refund = provider.read_refund(REFUND, answer(keys, "alipay.trade.refund", inner))
    assert (refund.status, refund.out_refund_no, refund.amount_minor) == (status, "rf_0001", None)


def test_refund_refusal_is_failed_and_system_error_unknown(provider: AlipayProvider, keys: Keys) -> None:
    inner = {"code": "40004", "sub_code": "ACQ.SELLER_BALANCE_NOT_ENOUGH", "sub_msg": "卖家余额不足"}
    refund = provider.read_refund(REFUND, answer(keys, "alipay.trade.refund", inner))
    assert (refund.status, refund.failure_reason) == (
        RefundStatus.FAILED,
        "ACQ.SELLER_BALANCE_NOT_ENOUGH: 卖家余额不足",
    )
    with pytest.raises(ProviderAnswerError):
        provider.read_refund(
            REFUND, answer(keys, "alipay.trade.refund", {"code": "40004", "sub_code": "ACQ.SYSTEM_ERROR"})
        )


@pytest.mark.parametrize(
    ("inner", "status", "amount", "reason"),
    [
        (
            {
                "code": "10000",
                "out_trade_no": "att_0001",
                "out_request_no": "rf_0001",
                "refund_amount": "5.00",
                "refund_status": "REFUND_SUCCESS",
            },
            RefundStatus.SUCCEEDED,
            500,
            "",
        ),
        ({"code": "10000", "out_trade_no": "att_0001"}, RefundStatus.FAILED, None, "not found"),
        ({"code": "40004", "sub_code": "ACQ.TRADE_NOT_EXIST"}, RefundStatus.FAILED, None, "not found"),
        (
            {
                "code": "10000",
                "out_request_no": "rf_0001",
                "refund_amount": "5.00",
                "refund_status": "REFUND_PROCESSING",
            },
            RefundStatus.PENDING,
            500,
            "",
        ),
    ],
)
def test_refund_query_answers(
    provider: AlipayProvider, keys: Keys, inner: dict[str, str], status: RefundStatus, amount: int | None, reason: str
) -> None:
    refund = provider.read_refund_query(REFUND, answer(keys, "alipay.trade.fastpay.refund.query", inner))
    assert (refund.status, refund.amount_minor, refund.failure_reason) == (status, amount, reason)


def test_refund_query_about_another_refund_raises(provider: AlipayProvider, keys: Keys) -> None:
    inner = {"code": "10000", "out_request_no": "rf_9999", "refund_status": "REFUND_SUCCESS", "refund_amount": "5.00"}
    with pytest.raises(ProviderAnswerError):
        provider.read_refund_query(REFUND, answer(keys, "alipay.trade.fastpay.refund.query", inner))


# ---- statements --------------------------------------------------------------------------------------------------

BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"
YUAN_COLUMN = "订单金额\uff08元\uff09"  # Alipay writes the brackets full-width
BILL_CSV = "\n".join(
    [
        "#支付宝业务明细查询",
        "#账号:[20880000000000010156]",
        "#起始日期:[2024年04月30日 00:00:00]   终止日期:[2024年05月01日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
        f"{YUAN_COLUMN},商家实收\uff08元\uff09,退款批次号/请求号,备注",
        "2024043022001400000000000001\t,att_0001\t,交易,课程,2024-04-30 10:00:00,2024-04-30 10:00:05,,,,,"
        "a***@example.com,12.30,12.30,,",
        "2024043022001400000000000001\t,att_0001\t,退款,课程,2024-04-30 10:00:00,2024-04-30 18:30:00,,,,,"
        "a***@example.com,12.30,-5.00,rf_0001\t,",  # 订单金额 stays the trade's total
        "#-----------------------------------------业务明细列表结束------------------------------------",
        "#交易合计:1笔,商家实收共12.30元",
        "#退款合计:1笔,商家实收退款共-5.00元",
    ]
)


def test_statement_answer_leads_to_a_plain_get_of_the_bill(provider: AlipayProvider, keys: Keys) -> None:
    url = "https://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade&fileType=csv.zip&token=x"
    inner = {"code": "10000", "msg": "Success", "bill_download_url": url}
    call = provider.read_statement(date(2024, 4, 30), answer(keys, BILL_METHOD, inner), NOW)
    assert call == HttpCall("GET", url, (), b"", True, "statement")


def test_no_bill_is_an_empty_statement_only_once_the_bill_is_due(provider: AlipayProvider, keys: Keys) -> None:
    reply = answer(keys, BILL_METHOD, {"code": "40004", "sub_code": "isp.bill_not_exist", "sub_msg": "账单不存在"})
    assert provider.read_statement(date(2024, 4, 30), reply, NOW) == []
    with pytest.raises(ProviderAnswerError, match="not ready"):
        provider.read_statement(date(2024, 4, 30), reply, datetime(2024, 5, 1, 0, 30, tzinfo=UTC))  # 08:30 Beijing


def _check_bill_lines(lines: list[Any]) -> None:
    assert [(line.kind, line.out_trade_no, line.out_refund_no, line.amount_minor) for line in lines] == [
        (NotificationKind.PAYMENT, "att_0001", "", 1230),
        (NotificationKind.REFUND, "att_0001", "rf_0001", 500),
    ]
    assert lines[0].trade_no == "2024043022001400000000000001"
    assert lines[1].at == datetime(2024, 4, 30, 18, 30, tzinfo=CHINA)
    assert (lines[0].status, lines[1].status, lines[0].currency) == ("交易", "退款", "CNY")


def test_bill_in_gbk_inside_a_zip_with_its_summary(provider: AlipayProvider) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("20880000000000010156_20240430_业务明细.csv", BILL_CSV.encode("gbk"))
        summary = f"#支付宝业务汇总查询\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,{YUAN_COLUMN}\n,,1,1,12.30\n"
        archive.writestr("20880000000000010156_20240430_业务明细(汇总).csv", summary.encode("gbk"))
    reply = HttpReply(200, {"content-type": "application/octet-stream"}, buffer.getvalue())
    _check_bill_lines(provider.read_statement(date(2024, 4, 30), reply, NOW))  # type: ignore[arg-type]


def test_bill_as_bare_csv_in_utf8_with_bom_and_plain_column_names() -> None:
    text = (
        "# paygate sample bill\ntrade_no,out_trade_no,business_type,amount,out_request_no,time,status\n"
        "2024043022001400000000000001,att_0001,payment,12.30,,2024-04-30 10:00:05,TRADE_SUCCESS\n"
        "2024043022001400000000000001,att_0001,refund,5.00,rf_0001,2024-04-30 18:30:00,REFUND_SUCCESS\n"
    )
    lines = alipay_bill.parse(b"\xef\xbb\xbf" + text.encode())
    assert [(line.kind, line.amount_minor, line.status) for line in lines] == [
        (NotificationKind.PAYMENT, 1230, "TRADE_SUCCESS"),
        (NotificationKind.REFUND, 500, "REFUND_SUCCESS"),
    ]


def test_bill_as_utf8_csv_with_a_status_column() -> None:
    text = (
        "#支付宝业务明细查询\n"
        f"支付宝交易号,商户订单号,业务类型,完成时间,{YUAN_COLUMN},商家实收\uff08元\uff09,退款批次号/请求号,交易状态\n"
        "2024043022001400000000000001,att_0001,交易,2024-04-30 10:00:05,12.30,12.30,,TRADE_SUCCESS\n"
        "2024043022001400000000000001,att_0001,退款,2024-04-30 18:30:00,12.30,-0.30,rf_0002,REFUND_SUCCESS\n"
    )
    lines = alipay_bill.parse(text.encode())
    assert [(line.kind, line.amount_minor, line.out_refund_no, line.status) for line in lines] == [
        (NotificationKind.PAYMENT, 1230, "", "TRADE_SUCCESS"),
        (NotificationKind.REFUND, 30, "rf_0002", "REFUND_SUCCESS"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        BILL_CSV.replace("12.30,12.30", "12.345,12.30").encode("gbk"),  # three decimals
        BILL_CSV.replace(",交易,", ",转账,").encode("gbk"),  # unknown business type
        BILL_CSV.replace("12.30,12.30", "-12.30,12.30").encode("gbk"),  # a negative payment
        BILL_CSV.replace("支付宝交易号", "交易号").encode("gbk"),  # no trade number column
        b"PK\x03\x04not really a zip",
        b"#only comments\n",
    ],
)
def test_bills_that_are_not_readable_raise(body: bytes) -> None:
    with pytest.raises(ProviderAnswerError):
        alipay_bill.parse(body)


# ---- notifications ------------------------------------------------------------------------------------------------


def notification(keys: Keys, *, key: rsa.RSAPrivateKey | None = None, **changes: str) -> dict[str, str]:
    params = {
        "gmt_create": "2024-05-01 20:04:00",
        "charset": "utf-8",
        "seller_email": "shop@example.com",
        "subject": "课程 Python 入门",
        "buyer_id": "2088102000000001",
        "invoice_amount": "12.30",
        "notify_id": "2024050100222200500000000001",
        "notify_type": "trade_status_sync",
        "trade_status": "TRADE_SUCCESS",
        "receipt_amount": "12.30",
        "app_id": APP_ID,
        "sign_type": "RSA2",
        "seller_id": SELLER_ID,
        "gmt_payment": "2024-05-01 20:05:06",
        "notify_time": "2024-05-01 20:05:07",
        "version": "1.0",
        "out_trade_no": "att_0001",
        "total_amount": "12.30",
        "trade_no": "2024050122001400000000000001",
        "auth_app_id": APP_ID,
    }
    params.update(changes)
    params = {k: v for k, v in params.items() if v != "<drop>"}
    params["sign"] = rsa2(key or keys.alipay, string_to_sign(params, ("sign", "sign_type")))
    return params


def test_genuine_payment_notification(provider: AlipayProvider, keys: Keys, sdk: AliPay) -> None:
    params = notification(keys)
    # The SDK agrees the notification is genuine.
    assert sdk.verify({k: v for k, v in params.items() if k != "sign"}, params["sign"])
    note = provider.read_notification(
        {"content-type": "application/x-www-form-urlencoded"}, urlencode(params).encode(), NOW
    )
    assert (note.kind, note.notification_id, note.nonce, note.refund) == (
        NotificationKind.PAYMENT,
        "2024050100222200500000000001",
        "",
        None,
    )
    assert note.payment == ProviderState(
        AttemptStatus.SUCCEEDED,
        "att_0001",
        trade_no="2024050122001400000000000001",
        amount_minor=1230,
        currency="CNY",
        merchant_id=APP_ID,
        paid_at=datetime(2024, 5, 1, 20, 5, 6, tzinfo=CHINA),
    )


@pytest.mark.parametrize(
    ("trade_status", "status"),
    [
        ("WAIT_BUYER_PAY", AttemptStatus.PENDING),
        ("TRADE_CLOSED", AttemptStatus.CLOSED),
        ("TRADE_FINISHED", AttemptStatus.SUCCEEDED),
    ],
)
def test_notification_trade_statuses(
    provider: AlipayProvider, keys: Keys, trade_status: str, status: AttemptStatus
) -> None:
    body = urlencode(notification(keys, trade_status=trade_status)).encode()
    note = provider.read_notification({}, body, NOW)
    assert note.payment is not None and note.payment.status is status


def test_refund_notification(provider: AlipayProvider, keys: Keys) -> None:
    params = notification(keys, refund_fee="5.00", out_biz_no="rf_0001", gmt_refund="2024-05-01 21:00:00.123")
    note = provider.read_notification({}, urlencode(params).encode(), NOW)
    assert (note.kind, note.out_trade_no, note.payment) == (NotificationKind.REFUND, "att_0001", None)
    assert note.refund is not None
    assert (note.refund.status, note.refund.out_refund_no, note.refund.merchant_id) == (
        RefundStatus.SUCCEEDED,
        "rf_0001",
        APP_ID,
    )
    assert note.refund.amount_minor is None  # refund_fee is the trade's running total, not this refund's amount


def _forged_bodies(keys: Keys) -> list[tuple[bytes, str]]:
    genuine = notification(keys)
    tampered = {**genuine, "total_amount": "0.01"}
    no_sign = {k: v for k, v in genuine.items() if k != "sign"}
    return [
        (urlencode(tampered).encode(), "bad_signature"),
        (urlencode(notification(keys, key=keys.stranger)).encode(), "bad_signature"),
        (urlencode(no_sign).encode(), "bad_signature"),
        (urlencode({**genuine, "sign_type": "RSA"}).encode(), "bad_signature"),
        (urlencode({**genuine, "sign": "bm90IGJhc2U2NA=="}).encode(), "bad_signature"),
        (b"\xff\xfe not a form", "malformed"),
        (urlencode(genuine).encode() + b"&app_id=" + APP_ID.encode(), "malformed"),  # a repeated field
        (urlencode(notification(keys, out_trade_no="<drop>")).encode(), "malformed"),
        (urlencode(notification(keys, total_amount="1.234")).encode(), "malformed"),
        (urlencode(notification(keys, trade_status="TRADE_MAYBE")).encode(), "malformed"),
        (urlencode(notification(keys, seller_id="2088999999999999")).encode(), "wrong_merchant"),
    ]


def test_forged_or_malformed_notifications_are_rejected(provider: AlipayProvider, keys: Keys) -> None:
    for body, reason in _forged_bodies(keys):
        with pytest.raises(NotificationRejected) as caught:
            provider.read_notification({}, body, NOW)
        assert caught.value.reason == reason, body


def test_acknowledge_bodies(provider: AlipayProvider) -> None:
    assert provider.acknowledge(True) == HttpReply(200, {"content-type": "text/plain; charset=utf-8"}, b"success")
    assert provider.acknowledge(False) == HttpReply(200, {"content-type": "text/plain; charset=utf-8"}, b"failure")


def test_identity_and_config(provider: AlipayProvider, keys: Keys) -> None:
    checked: Provider = provider  # mypy checks the structural match with base.Provider here
    assert (checked.method, checked.merchant_id) == (Method.ALIPAY, APP_ID)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        AlipayConfig(GATEWAY, APP_ID, SELLER_ID, small, keys.alipay.public_key(), NOTIFY_URL)
    with pytest.raises(ValueError, match="app_id"):
        AlipayConfig(GATEWAY, "", SELLER_ID, keys.app, keys.alipay.public_key(), NOTIFY_URL)
    shown = repr(AlipayConfig(GATEWAY, APP_ID, SELLER_ID, keys.app, keys.alipay.public_key(), NOTIFY_URL))
    assert APP_ID in shown and "RSAPrivateKey" not in shown
