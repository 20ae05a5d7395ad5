"""UnionPay 5.1.0 adapter: every request and answer, checked against the protocol rules rebuilt here.

Signatures are checked with a reference implementation written in this file from the rule (sorted k=v without
`signature`, lowercase hex SHA-256, SHA256withRSA PKCS#1 v1.5, base64), never with the adapter's own code.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from workers.channels.base import (
    AttemptStatus,
    HttpCall,
    HttpReply,
    NotificationKind,
    NotificationRejected,
    Order,
    ProviderAnswerError,
    ProviderState,
    RefundOrder,
    RefundStatus,
    Scene,
)
from workers.channels.unionpay import UnionPayConfig, UnionPayProvider
from workers.domain.types import Method

BASE = "https://gateway.example.test"
MER_ID = "777290058110048"
CERT_ID = "68759663125"
PLATFORM_CERT_ID = "69042905377"
CREATED = datetime(2024, 3, 1, 16, 30, 5, tzinfo=UTC)  # 2024-03-02 00:30:05 in China: the date changes too
NOW = CREATED + timedelta(minutes=3)
ORDER_ID = "att01hq3k5x9v7m2c8d4e6f0g1h2j"
REFUND_ID = "rfd01hq3k5x9v7m2c8d4e6f0g1h2k"
QUERY_ID = "952403020030051234567"


@dataclass(frozen=True)
class Keys:
    merchant: rsa.RSAPrivateKey
    platform: rsa.RSAPrivateKey
    stranger: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    def new() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(new(), new(), new())


@pytest.fixture
def config(keys: Keys) -> UnionPayConfig:
    return UnionPayConfig(
        base_url=BASE + "/",
        mer_id=MER_ID,
        cert_id=CERT_ID,
        private_key=keys.merchant,
        platform_cert_id=PLATFORM_CERT_ID,
        platform_public_key=keys.platform.public_key(),
        back_url="https://pay.example.test/notify/unionpay",
        front_url="https://learn.example.test/paid",
    )


@pytest.fixture
def provider(config: UnionPayConfig) -> UnionPayProvider:
    return UnionPayProvider(config)


# -- the reference implementation of the protocol rule ----------------------------------------------------------


def string_to_sign(params: dict[str, str]) -> bytes:
    text = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")


def reference_signature(params: dict[str, str], key: rsa.RSAPrivateKey) -> str:
    return base64.b64encode(key.sign(string_to_sign(params), padding.PKCS1v15(), hashes.SHA256())).decode()


def assert_signed_by(params: dict[str, str], key: rsa.RSAPrivateKey) -> None:
    # PKCS#1 v1.5 is deterministic: the same key over the same digest gives the same bytes.
    assert params["signature"] == reference_signature(params, key)
    key.public_key().verify(
        base64.b64decode(params["signature"]), string_to_sign(params), padding.PKCS1v15(), hashes.SHA256()
    )


def form(call: HttpCall) -> dict[str, str]:
    pairs = parse_qsl(call.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert len(pairs) == len(dict(pairs))
    return dict(pairs)


def signed(params: dict[str, str], key: rsa.RSAPrivateKey, cert_id: str | None = PLATFORM_CERT_ID) -> dict[str, str]:
    base = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "merId": MER_ID, **params}
    if cert_id is not None:
        base["certId"] = cert_id
    return {**base, "signature": reference_signature(base, key)}


def raw_body(params: dict[str, str]) -> bytes:
    """How the real gateway writes a synchronous answer: raw values, nothing percent-encoded."""
    return "&".join(f"{k}={v}" for k, v in params.items()).encode("utf-8")


def answer(
    keys: Keys, fields: dict[str, str] | None = None, *, encoded: bool = False, status: int = 200, **params: str
) -> HttpReply:
    message = signed({**(fields or {}), **params}, keys.platform)
    body = urlencode(message).encode() if encoded else raw_body(message)
    return HttpReply(status, {"content-type": "text/plain;charset=UTF-8"}, body)


def order(scene: Scene = Scene.PAGE, /, **changes: object) -> Order:
    values: dict[str, object] = {
        "out_trade_no": ORDER_ID,
        "amount_minor": 12345,
        "currency": "CNY",
        "subject": "Course: Linear Algebra",
        "notify_url": "https://pay.example.test/notify/unionpay/att",
        "scene": scene,
        "payer": "",
        "created_at": CREATED,
        "expires_at": CREATED + timedelta(minutes=30),
    }
    values.update(changes)
    return Order(**values)  # type: ignore[arg-type]


def refund_order(**changes: object) -> RefundOrder:
    values: dict[str, object] = {
        "out_trade_no": ORDER_ID,
        "trade_no": QUERY_ID,
        "out_refund_no": REFUND_ID,
        "amount_minor": 2000,
        "total_minor": 12345,
        "currency": "CNY",
        "reason": "course cancelled",
        "notify_url": "",
        "created_at": CREATED + timedelta(days=2),
    }
    values.update(changes)
    return RefundOrder(**values)  # type: ignore[arg-type]


# -- configuration --------------------------------------------------------------------------------------------


def _self_signed(key: rsa.RSAPrivateKey, serial: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test unionpay signing")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(CREATED - timedelta(days=1))
        .not_valid_after(CREATED + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("platform_as", ["public_key", "certificate"])
def test_load_reads_pem_files(keys: Keys, tmp_path: Path, platform_as: str) -> None:
    private = tmp_path / "merchant.pem"
    private.write_bytes(
        keys.merchant.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    platform = tmp_path / "platform.pem"
    if platform_as == "certificate":
        platform.write_bytes(
            _self_signed(keys.platform, int(PLATFORM_CERT_ID)).public_bytes(serialization.Encoding.PEM)
        )
    else:
        platform.write_bytes(
            keys.platform.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    loaded = UnionPayConfig.load(
        base_url=BASE,
        mer_id=MER_ID,
        cert_id=CERT_ID,
        private_key_path=private,
        platform_cert_id=PLATFORM_CERT_ID,
        platform_key_path=platform,
        back_url="https://pay.example.test/n",
        front_url="https://learn.example.test/r",
    )
    assert loaded.private_key.private_numbers() == keys.merchant.private_numbers()
    assert loaded.platform_public_key.public_numbers() == keys.platform.public_key().public_numbers()
    assert "PRIVATE" not in repr(loaded) and "private_key" not in repr(loaded)


def test_load_refuses_a_non_rsa_key(tmp_path: Path, keys: Keys) -> None:
    private = tmp_path / "ec.pem"
    private.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="RSA"):
        UnionPayConfig.load(
            base_url=BASE,
            mer_id=MER_ID,
            cert_id=CERT_ID,
            private_key_path=private,
            platform_cert_id=PLATFORM_CERT_ID,
            platform_key_path=private,
            back_url="",
            front_url="",
        )


def test_provider_identity(provider: UnionPayProvider, config: UnionPayConfig) -> None:
    assert provider.method is Method.UNIONPAY
    assert provider.merchant_id == MER_ID
    assert config.base_url == BASE  # trailing slash dropped
    assert config.statement_url == BASE + "/gateway/api/fileTransRequest.do"


# -- consume --------------------------------------------------------------------------------------------------

COMMON = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "certId": CERT_ID, "accessType": "0"}


@pytest.mark.parametrize(("scene", "channel"), [(Scene.PAGE, "07"), (Scene.WAP, "08")])
def test_page_consume_is_a_signed_front_url(provider: UnionPayProvider, keys: Keys, scene: Scene, channel: str) -> None:
    state = provider.create(order(scene), NOW)
    assert isinstance(state, ProviderState)
    assert state.status is AttemptStatus.PENDING
    assert (state.out_trade_no, state.amount_minor, state.currency, state.merchant_id) == (
        ORDER_ID,
        12345,
        "CNY",
        MER_ID,
    )
    url = urlsplit(state.pay_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == BASE + "/gateway/api/frontTransReq.do"
    params = dict(parse_qsl(url.query, strict_parsing=True))
    assert params == {
        **COMMON,
        "merId": MER_ID,
        "txnType": "01",
        "txnSubType": "01",
        "bizType": "000201",
        "channelType": channel,
        "orderId": ORDER_ID,
        "txnTime": "20240302003005",
        "txnAmt": "12345",
        "currencyCode": "156",
        "backUrl": "https://pay.example.test/notify/unionpay/att",
        "frontUrl": "https://learn.example.test/paid",
        "payTimeout": "20240302010005",
        "signature": params["signature"],
    }
    assert_signed_by(params, keys.merchant)


def test_in_app_consume_posts_to_app_trans_req(provider: UnionPayProvider, keys: Keys) -> None:
    call = provider.create(order(Scene.IN_APP, notify_url=""), NOW)
    assert isinstance(call, HttpCall)
    assert (call.method, call.url, call.purpose, call.idempotent) == (
        "POST",
        BASE + "/gateway/api/appTransReq.do",
        "create",
        True,
    )
    assert dict(call.headers)["Content-Type"].startswith("application/x-www-form-urlencoded")
    params = form(call)
    assert params["channelType"] == "08"
    assert params["backUrl"] == "https://pay.example.test/notify/unionpay"  # the config's, as the order has none
    assert "frontUrl" not in params
    assert (params["txnType"], params["txnSubType"], params["txnAmt"], params["txnTime"]) == (
        "01",
        "01",
        "12345",
        "20240302003005",
    )
    assert_signed_by(params, keys.merchant)


def test_naive_times_are_taken_as_utc(provider: UnionPayProvider) -> None:
    naive = order(Scene.IN_APP, created_at=datetime(2024, 1, 1, 23, 0), expires_at=datetime(2024, 1, 2))
    call = provider.create(naive, NOW)
    assert isinstance(call, HttpCall)
    assert form(call)["txnTime"] == "20240102070000"
    assert form(call)["payTimeout"] == "20240102080000"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"currency": "USD"}, "CNY only"),
        ({"scene": Scene.QR}, "scenes"),
        ({"scene": Scene.CARD}, "scenes"),
        ({"out_trade_no": "att_01hq3k5x9v7m2c8d4e6f0g1h2j"}, "letters and digits"),
        ({"out_trade_no": "short"}, "8-40"),
        ({"amount_minor": 0}, "positive"),
        ({"amount_minor": -5}, "positive"),
        ({"amount_minor": 12.5}, "whole"),
        ({"amount_minor": True}, "whole"),
        ({"expires_at": CREATED}, "expires"),
    ],
)
def test_create_refuses_what_unionpay_cannot_take(
    provider: UnionPayProvider, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        provider.create(order(**changes), NOW)


def test_read_create_gives_the_tn(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="00", respMsg="成功[0000000]", orderId=ORDER_ID, txnAmt="12345", tn="79524030200")
    state = provider.read_create(order(Scene.IN_APP), reply)
    assert state.status is AttemptStatus.PENDING
    assert (state.prepay_id, state.amount_minor, state.merchant_id) == ("79524030200", 12345, MER_ID)


def test_read_create_reads_a_percent_encoded_answer_too(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, encoded=True, respCode="00", respMsg="成功 [0]", orderId=ORDER_ID, tn="79524030")
    assert provider.read_create(order(Scene.IN_APP), reply).prepay_id == "79524030"


def test_raw_answer_with_braced_value(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="00", orderId=ORDER_ID, tn="79524030", reqReserved="{a=b&c=d}")
    assert provider.read_create(order(Scene.IN_APP), reply).prepay_id == "79524030"


@pytest.mark.parametrize("code", ["03", "04", "05", "12"])
def test_read_create_unknown_outcomes_raise(provider: UnionPayProvider, keys: Keys, code: str) -> None:
    with pytest.raises(ProviderAnswerError, match=code):
        provider.read_create(order(Scene.IN_APP), answer(keys, respCode=code, orderId=ORDER_ID))


def test_read_create_refusal_is_failed_with_the_message(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="31", respMsg="商户状态不正确", orderId=ORDER_ID)
    state = provider.read_create(order(Scene.IN_APP), reply)
    assert state.status is AttemptStatus.FAILED
    assert "商户状态不正确" in state.failure_reason and "31" in state.failure_reason


def test_read_create_without_tn_is_not_trusted(provider: UnionPayProvider, keys: Keys) -> None:
    with pytest.raises(ProviderAnswerError, match="tn"):
        provider.read_create(order(Scene.IN_APP), answer(keys, respCode="00", orderId=ORDER_ID))


def test_read_create_about_another_order_is_not_trusted(provider: UnionPayProvider, keys: Keys) -> None:
    with pytest.raises(ProviderAnswerError, match="answered about"):
        provider.read_create(order(Scene.IN_APP), answer(keys, respCode="00", orderId="att0other00000", tn="1"))


@pytest.mark.parametrize("status", [500, 502, 404])
def test_http_errors_are_not_trusted(provider: UnionPayProvider, keys: Keys, status: int) -> None:
    with pytest.raises(ProviderAnswerError, match=str(status)):
        provider.read_create(order(Scene.IN_APP), answer(keys, status=status, respCode="00", tn="1"))


def test_answer_signed_by_someone_else_is_not_trusted(provider: UnionPayProvider, keys: Keys) -> None:
    message = signed({"respCode": "00", "orderId": ORDER_ID, "tn": "1"}, keys.stranger)
    with pytest.raises(ProviderAnswerError, match="bad_signature"):
        provider.read_create(order(Scene.IN_APP), HttpReply(200, {}, raw_body(message)))


def test_tampered_answer_is_not_trusted(provider: UnionPayProvider, keys: Keys) -> None:
    message = signed({"respCode": "00", "orderId": ORDER_ID, "tn": "1", "txnAmt": "100"}, keys.platform)
    message["txnAmt"] = "1"
    with pytest.raises(ProviderAnswerError, match="bad_signature"):
        provider.read_create(order(Scene.IN_APP), HttpReply(200, {}, raw_body(message)))


def test_answer_without_signature_is_not_trusted(provider: UnionPayProvider, keys: Keys) -> None:
    message = signed({"respCode": "00", "orderId": ORDER_ID, "tn": "1"}, keys.platform)
    del message["signature"]
    with pytest.raises(ProviderAnswerError, match="bad_signature"):
        provider.read_create(order(Scene.IN_APP), HttpReply(200, {}, raw_body(message)))


def test_answer_from_an_unknown_certificate_is_not_trusted(provider: UnionPayProvider, keys: Keys) -> None:
    message = signed({"respCode": "00", "orderId": ORDER_ID, "tn": "1"}, keys.platform, cert_id="12345")
    with pytest.raises(ProviderAnswerError, match="unknown_cert"):
        provider.read_create(order(Scene.IN_APP), HttpReply(200, {}, raw_body(message)))


def test_real_510_answer_names_its_certificate_in_sign_pub_key_cert(provider: UnionPayProvider, keys: Keys) -> None:
    pem = _self_signed(keys.platform, int(PLATFORM_CERT_ID)).public_bytes(serialization.Encoding.PEM).decode()
    message = signed({"respCode": "00", "orderId": ORDER_ID, "tn": "9", "signPubKeyCert": pem}, keys.platform, None)
    assert provider.read_create(order(Scene.IN_APP), HttpReply(200, {}, raw_body(message))).prepay_id == "9"


def test_key_sent_in_the_message_is_never_used(provider: UnionPayProvider, keys: Keys) -> None:
    # A forger sends their own certificate, carrying our trusted serial number, and signs with its key.
    pem = _self_signed(keys.stranger, int(PLATFORM_CERT_ID)).public_bytes(serialization.Encoding.PEM).decode()
    message = signed({"respCode": "00", "orderId": ORDER_ID, "tn": "9", "signPubKeyCert": pem}, keys.stranger, None)
    with pytest.raises(ProviderAnswerError, match="bad_signature"):
        provider.read_create(order(Scene.IN_APP), HttpReply(200, {}, raw_body(message)))


# -- query and close ------------------------------------------------------------------------------------------


def test_query_sends_the_original_txn_time(provider: UnionPayProvider, keys: Keys) -> None:
    call = provider.query(ORDER_ID, NOW, created_at=CREATED)
    assert (call.method, call.url, call.purpose, call.idempotent) == (
        "POST",
        BASE + "/gateway/api/queryTrans.do",
        "query",
        True,
    )
    params = form(call)
    assert params == {
        **COMMON,
        "merId": MER_ID,
        "txnType": "00",
        "txnSubType": "00",
        "bizType": "000000",
        "txnTime": "20240302003005",
        "orderId": ORDER_ID,
        "signature": params["signature"],
    }
    assert_signed_by(params, keys.merchant)


def test_query_without_created_at_uses_now(provider: UnionPayProvider) -> None:
    assert form(provider.query(ORDER_ID, NOW))["txnTime"] == "20240302003305"


def _query_answer(keys: Keys, resp: str = "00", orig: str = "00", **extra: str) -> HttpReply:
    fields = {"respCode": resp, "orderId": ORDER_ID, "queryId": QUERY_ID, "txnAmt": "12345", "currencyCode": "156"}
    if orig:
        fields["origRespCode"] = orig
    return answer(keys, {**fields, **extra})


@pytest.mark.parametrize("orig", ["00", "A6"])
def test_read_query_paid(provider: UnionPayProvider, keys: Keys, orig: str) -> None:
    state = provider.read_query(ORDER_ID, _query_answer(keys, orig=orig))
    assert state.status is AttemptStatus.SUCCEEDED
    assert (state.trade_no, state.amount_minor, state.currency, state.merchant_id) == (QUERY_ID, 12345, "CNY", MER_ID)


@pytest.mark.parametrize("orig", ["03", "04", "05"])
def test_read_query_in_progress_is_pending(provider: UnionPayProvider, keys: Keys, orig: str) -> None:
    assert provider.read_query(ORDER_ID, _query_answer(keys, orig=orig)).status is AttemptStatus.PENDING


def test_read_query_not_found(provider: UnionPayProvider, keys: Keys) -> None:
    state = provider.read_query(ORDER_ID, answer(keys, respCode="34", respMsg="查无此交易", orderId=ORDER_ID))
    assert (state.status, state.failure_reason) == (AttemptStatus.FAILED, "not found")


@pytest.mark.parametrize("resp", ["03", "04", "05", "37", "99"])
def test_read_query_that_did_not_answer_raises(provider: UnionPayProvider, keys: Keys, resp: str) -> None:
    with pytest.raises(ProviderAnswerError, match=resp):
        provider.read_query(ORDER_ID, _query_answer(keys, resp=resp, orig=""))


def test_read_query_failed_payment_carries_orig_message(provider: UnionPayProvider, keys: Keys) -> None:
    state = provider.read_query(ORDER_ID, _query_answer(keys, orig="01", origRespMsg="交易失败"))
    assert state.status is AttemptStatus.FAILED
    assert "交易失败" in state.failure_reason


def test_read_query_without_orig_code_raises(provider: UnionPayProvider, keys: Keys) -> None:
    with pytest.raises(ProviderAnswerError, match="origRespCode"):
        provider.read_query(ORDER_ID, _query_answer(keys, orig=""))


@pytest.mark.parametrize("amount", ["123.45", "-5", "1e3", "\uff11\uff12"])
def test_amounts_are_whole_fen(provider: UnionPayProvider, keys: Keys, amount: str) -> None:
    reply = answer(keys, respCode="00", origRespCode="00", orderId=ORDER_ID, queryId=QUERY_ID, txnAmt=amount)
    with pytest.raises(ProviderAnswerError, match="fen"):
        provider.read_query(ORDER_ID, reply)


def test_close_is_a_query(provider: UnionPayProvider) -> None:
    call = provider.close(ORDER_ID, "", NOW, created_at=CREATED)
    assert (call.url, call.purpose, call.idempotent) == (BASE + "/gateway/api/queryTrans.do", "close", True)
    assert form(call)["txnType"] == "00" and form(call)["txnTime"] == "20240302003005"
    assert form(provider.close(ORDER_ID, QUERY_ID, NOW, created_at=CREATED))["txnType"] == "00"  # never a void


@pytest.mark.parametrize(
    ("reply_fields", "status"),
    [
        ({"resp": "34", "orig": ""}, AttemptStatus.CLOSED),
        ({"orig": "01"}, AttemptStatus.CLOSED),
        ({"orig": "00"}, AttemptStatus.SUCCEEDED),
        ({"orig": "05"}, AttemptStatus.PENDING),
    ],
)
def test_read_close(
    provider: UnionPayProvider, keys: Keys, reply_fields: dict[str, str], status: AttemptStatus
) -> None:
    assert provider.read_close(ORDER_ID, _query_answer(keys, **reply_fields)).status is status


# -- refunds --------------------------------------------------------------------------------------------------


def test_refund_request(provider: UnionPayProvider, keys: Keys) -> None:
    call = provider.refund(refund_order(), NOW)
    assert (call.method, call.url, call.purpose, call.idempotent) == (
        "POST",
        BASE + "/gateway/api/backTransReq.do",
        "refund",
        True,
    )
    params = form(call)
    assert params == {
        **COMMON,
        "merId": MER_ID,
        "txnType": "04",
        "txnSubType": "00",
        "bizType": "000201",
        "channelType": "07",
        "txnTime": "20240304003005",
        "orderId": REFUND_ID,
        "origQryId": QUERY_ID,
        "txnAmt": "2000",
        "backUrl": "https://pay.example.test/notify/unionpay",
        "signature": params["signature"],
    }
    assert_signed_by(params, keys.merchant)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trade_no": ""}, "queryId"),
        ({"amount_minor": 20000}, "exceeds"),
        ({"amount_minor": 0}, "positive"),
        ({"currency": "HKD"}, "CNY"),
        ({"out_refund_no": "rfd-1234567"}, "letters and digits"),
    ],
)
def test_refund_refusals(provider: UnionPayProvider, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        provider.refund(refund_order(**changes), NOW)


def test_read_refund_accepted_is_pending(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="00", orderId=REFUND_ID, queryId="952403040030059999", txnAmt="2000")
    refund = provider.read_refund(refund_order(), reply)
    assert (refund.status, refund.refund_no, refund.amount_minor) == (RefundStatus.PENDING, "952403040030059999", 2000)


@pytest.mark.parametrize("code", ["03", "04", "05", "12"])
def test_read_refund_unknown_raises(provider: UnionPayProvider, keys: Keys, code: str) -> None:
    with pytest.raises(ProviderAnswerError):
        provider.read_refund(refund_order(), answer(keys, respCode=code, orderId=REFUND_ID))


def test_read_refund_refused(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="35", respMsg="原交易不存在", orderId=REFUND_ID)
    refund = provider.read_refund(refund_order(), reply)
    assert refund.status is RefundStatus.FAILED and "原交易不存在" in refund.failure_reason


def test_read_refund_for_another_merchant_raises(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="00", orderId=REFUND_ID, merId="777000000000001")
    with pytest.raises(ProviderAnswerError, match="merchant"):
        provider.read_refund(refund_order(), reply)


def test_refund_query_uses_the_refunds_own_txn_time(provider: UnionPayProvider, keys: Keys) -> None:
    call = provider.refund_query(refund_order(), NOW)
    params = form(call)
    assert (call.url, call.purpose, call.idempotent) == (BASE + "/gateway/api/queryTrans.do", "refund_query", True)
    assert (params["txnType"], params["orderId"], params["txnTime"]) == ("00", REFUND_ID, "20240304003005")
    assert_signed_by(params, keys.merchant)


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ({"respCode": "00", "origRespCode": "00"}, RefundStatus.SUCCEEDED, ""),
        ({"respCode": "00", "origRespCode": "04"}, RefundStatus.PENDING, ""),
        ({"respCode": "00", "origRespCode": "01", "origRespMsg": "退货失败"}, RefundStatus.FAILED, "退货失败"),
        ({"respCode": "34"}, RefundStatus.FAILED, "not found"),
    ],
)
def test_read_refund_query(
    provider: UnionPayProvider, keys: Keys, fields: dict[str, str], status: RefundStatus, reason: str
) -> None:
    reply = answer(keys, fields, orderId=REFUND_ID, queryId="9524", txnAmt="2000")
    refund = provider.read_refund_query(refund_order(), reply)
    assert refund.status is status
    assert reason in refund.failure_reason and (reason == "") == (refund.failure_reason == "")


# -- statement ------------------------------------------------------------------------------------------------

SETTLEMENT = (
    "# txnType|orderId|queryId|txnAmt|currencyCode|respCode|txnTime|origOrderId\n"
    f"01|{ORDER_ID}|{QUERY_ID}|12345|156|00|20240302003005|\n"
    "\n"
    f"04|{REFUND_ID}|952403040030059999|2000|156|00|20240304091500|{ORDER_ID}\n"
)


def _file_answer(keys: Keys, text: str) -> HttpReply:
    content = base64.b64encode(zlib.compress(text.encode("utf-8"))).decode()
    return answer(keys, respCode="00", settleDate="0302", fileContent=content, fileName="INN24030288ZM_777")


def test_statement_request(provider: UnionPayProvider, keys: Keys) -> None:
    call = provider.statement(date(2024, 3, 2), NOW)
    assert (call.method, call.url, call.purpose, call.idempotent) == (
        "POST",
        BASE + "/gateway/api/fileTransRequest.do",
        "statement",
        True,
    )
    params = form(call)
    assert (params["txnType"], params["txnSubType"], params["bizType"]) == ("76", "01", "000000")
    assert (params["settleDate"], params["fileType"], params["txnTime"]) == ("0302", "00", "20240302003305")
    assert_signed_by(params, keys.merchant)


def test_statement_url_is_configurable(config: UnionPayConfig) -> None:
    provider = UnionPayProvider(replace(config, file_trans_url="https://filedownload.95516.com/"))
    assert provider.statement(date(2024, 3, 2), NOW).url == "https://filedownload.95516.com/"


def test_read_statement(provider: UnionPayProvider, keys: Keys) -> None:
    lines = provider.read_statement(date(2024, 3, 2), _file_answer(keys, SETTLEMENT), NOW)
    assert isinstance(lines, list) and len(lines) == 2
    payment, refund = lines
    assert payment.kind is NotificationKind.PAYMENT
    assert (payment.out_trade_no, payment.trade_no, payment.out_refund_no) == (ORDER_ID, QUERY_ID, "")
    assert (payment.amount_minor, payment.currency, payment.status) == (12345, "CNY", "00")
    assert payment.at == CREATED
    assert refund.kind is NotificationKind.REFUND
    assert (refund.out_trade_no, refund.out_refund_no, refund.amount_minor) == (ORDER_ID, REFUND_ID, 2000)
    assert refund.at == datetime(2024, 3, 4, 1, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "31|X1234567|9|100|156|00|20240302003005|\n",  # a void: not handled, so not guessed at
        "01|X1234567|9|1.00|156|00|20240302003005|\n",
        "01|X1234567|9|100|156|00|20240302|\n",
        "01|X1234567|9|100|156|00\n",
    ],
)
def test_read_statement_refuses_lines_it_cannot_read(provider: UnionPayProvider, keys: Keys, text: str) -> None:
    with pytest.raises(ProviderAnswerError, match="line 1"):
        provider.read_statement(date(2024, 3, 2), _file_answer(keys, text), NOW)


def test_read_statement_not_ready(provider: UnionPayProvider, keys: Keys) -> None:
    with pytest.raises(ProviderAnswerError, match="98"):
        provider.read_statement(date(2024, 3, 2), answer(keys, respCode="98", respMsg="文件不存在"), NOW)


def test_read_statement_of_another_day(provider: UnionPayProvider, keys: Keys) -> None:
    with pytest.raises(ProviderAnswerError, match="0302"):
        provider.read_statement(date(2024, 3, 3), _file_answer(keys, SETTLEMENT), NOW)


def test_read_statement_bad_content(provider: UnionPayProvider, keys: Keys) -> None:
    reply = answer(keys, respCode="00", settleDate="0302", fileContent=base64.b64encode(b"not deflated").decode())
    with pytest.raises(ProviderAnswerError, match="decode"):
        provider.read_statement(date(2024, 3, 2), reply, NOW)


# -- notifications --------------------------------------------------------------------------------------------


def _notification(
    keys: Keys, fields: dict[str, str] | None = None, key: rsa.RSAPrivateKey | None = None, **more: str
) -> bytes:
    """As UnionPay posts it to backUrl: a percent-encoded form, 5.1.0-style (signPubKeyCert, no certId)."""
    pem = _self_signed(keys.platform, int(PLATFORM_CERT_ID)).public_bytes(serialization.Encoding.PEM).decode()
    params = {
        "accessType": "0",
        "bizType": "000201",
        "txnSubType": "01",
        "txnType": "01",
        "orderId": ORDER_ID,
        "queryId": QUERY_ID,
        "txnAmt": "12345",
        "currencyCode": "156",
        "respCode": "00",
        "respMsg": "成功[0000000]",
        "txnTime": "20240302003005",
        "signPubKeyCert": pem,
        **(fields or {}),
        **more,
    }
    return urlencode(signed(params, key or keys.platform, cert_id=None)).encode()


MINIMAL_NOTE = {"txnType": "01", "orderId": ORDER_ID, "queryId": "1", "txnAmt": "5", "respCode": "00"}


def test_payment_notification(provider: UnionPayProvider, keys: Keys) -> None:
    note = provider.read_notification({}, _notification(keys), NOW)
    assert note.kind is NotificationKind.PAYMENT and note.notification_id == f"{QUERY_ID}:01" and note.nonce == ""
    assert note.payment is not None and note.refund is None
    assert note.payment.status is AttemptStatus.SUCCEEDED
    assert (note.payment.out_trade_no, note.payment.trade_no, note.payment.amount_minor) == (ORDER_ID, QUERY_ID, 12345)
    assert (note.payment.currency, note.payment.merchant_id) == ("CNY", MER_ID)


def test_failed_payment_notification(provider: UnionPayProvider, keys: Keys) -> None:
    note = provider.read_notification({}, _notification(keys, respCode="01", respMsg="交易失败"), NOW)
    assert note.payment is not None and note.payment.status is AttemptStatus.FAILED
    assert "交易失败" in note.payment.failure_reason


def test_refund_notification(provider: UnionPayProvider, keys: Keys) -> None:
    body = _notification(keys, txnType="04", txnSubType="00", orderId=REFUND_ID, queryId="9524", origQryId=QUERY_ID)
    note = provider.read_notification({}, body, NOW)
    assert note.kind is NotificationKind.REFUND and note.notification_id == "9524:04"
    assert note.refund is not None and note.payment is None
    assert (note.refund.status, note.refund.out_refund_no, note.refund.refund_no) == (
        RefundStatus.SUCCEEDED,
        REFUND_ID,
        "9524",
    )
    assert note.out_trade_no == ""


def test_notification_with_a_certid_is_read_too(provider: UnionPayProvider, keys: Keys) -> None:
    params = signed(MINIMAL_NOTE, keys.platform)
    assert provider.read_notification({}, urlencode(params).encode(), NOW).payment is not None


def _rejected(provider: UnionPayProvider, body: bytes) -> str:
    with pytest.raises(NotificationRejected) as caught:
        provider.read_notification({}, body, NOW)
    return caught.value.reason


def test_forged_notification(provider: UnionPayProvider, keys: Keys) -> None:
    assert _rejected(provider, _notification(keys, key=keys.stranger)) == "bad_signature"


def test_tampered_notification(provider: UnionPayProvider, keys: Keys) -> None:
    body = _notification(keys).replace(b"txnAmt=12345", b"txnAmt=1")
    assert b"txnAmt=1&" in body
    assert _rejected(provider, body) == "bad_signature"


def test_unsigned_notification(provider: UnionPayProvider, keys: Keys) -> None:
    params = dict(parse_qsl(_notification(keys).decode()))
    del params["signature"]
    assert _rejected(provider, urlencode(params).encode()) == "bad_signature"


def test_notification_from_an_unknown_certificate(provider: UnionPayProvider, keys: Keys) -> None:
    params = signed(MINIMAL_NOTE, keys.platform, "1")
    assert _rejected(provider, urlencode(params).encode()) == "unknown_cert"
    pem = _self_signed(keys.platform, 424242).public_bytes(serialization.Encoding.PEM).decode()
    assert _rejected(provider, _notification(keys, signPubKeyCert=pem)) == "unknown_cert"


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not a form",
        b"a=1&a=2&signature=%3D%3D",  # a repeated name
        b"justtext%3D",
        b"",
    ],
)
def test_malformed_notification_bodies(provider: UnionPayProvider, body: bytes) -> None:
    assert _rejected(provider, body) == "malformed"


@pytest.mark.parametrize(
    "fields",
    [
        {"txnType": "31"},
        {"queryId": ""},
        {"txnAmt": "12.34"},
        {"respCode": ""},
        {"txnType": "04", "merId": "777000000000001"},
    ],
)
def test_signed_but_malformed_notifications(provider: UnionPayProvider, keys: Keys, fields: dict[str, str]) -> None:
    assert _rejected(provider, _notification(keys, fields)) == "malformed"


def test_acknowledge(provider: UnionPayProvider) -> None:
    ok, retry = provider.acknowledge(True), provider.acknowledge(False)
    assert (ok.status, ok.body) == (200, b"ok")
    assert retry.status == 500
