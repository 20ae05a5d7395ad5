"""UnionPay 5.1.0: signMethod 01 forms, signed answers carrying the platform certificate, backUrl notifications,
query, refund (04) and void (31)."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl

from tests.channelsim.clients import unionpay as post
from tests.channelsim.conftest import Receiver, Simulator, load_cert_key, load_private, load_public
from tests.channelsim.signing import BEIJING, unionpay_parse, unionpay_sign, unionpay_verify

API = "/unionpay/gateway/api"


def verified(sim: Simulator, answer: dict[str, str]) -> bool:
    platform = load_public(sim.merchant["unionpay"]["platform_public_key"])
    return answer.get("certId") == sim.merchant["unionpay"]["platform_cert_id"] and unionpay_verify(answer, platform)


def consume(sim: Simulator, receiver: Receiver, amount: int = 1000) -> tuple[dict[str, str], str]:
    order_id = "U" + uuid.uuid4().hex[:20]
    path = f"/unionpay/{order_id}"
    answer = post(
        sim,
        "appTransReq.do",
        {
            "txnType": "01",
            "txnSubType": "01",
            "channelType": "08",
            "orderId": order_id,
            "txnAmt": str(amount),
            "currencyCode": "156",
            "backUrl": receiver.url(path),
        },
    )
    assert answer["respCode"] == "00", answer
    return answer, path


def query(sim: Simulator, order_id: str, txn_time: str) -> dict[str, str]:
    return post(
        sim,
        "queryTrans.do",
        {"txnType": "00", "txnSubType": "00", "orderId": order_id, "txnTime": txn_time, "bizType": "000000"},
    )


def test_signed_consume_is_accepted_and_the_answer_verifies(sim: Simulator, receiver: Receiver) -> None:
    answer, _path = consume(sim, receiver, 1234)
    assert answer["tn"].isdigit() and answer["respMsg"].startswith("成功")
    assert verified(sim, answer)
    cert_key = load_cert_key(answer["signPubKeyCert"])
    assert unionpay_verify(answer, cert_key)
    assert cert_key.public_numbers() == load_public(sim.merchant["unionpay"]["platform_public_key"]).public_numbers()
    assert not unionpay_verify({**answer, "txnAmt": "1"}, cert_key)


def test_a_wrongly_signed_request_is_refused_with_resp_code_11(sim: Simulator, receiver: Receiver) -> None:
    answer = post(
        sim,
        "appTransReq.do",
        {
            "txnType": "01",
            "txnSubType": "01",
            "channelType": "08",
            "orderId": "U" + uuid.uuid4().hex[:20],
            "txnAmt": "100",
            "currencyCode": "156",
            "backUrl": receiver.url("/unused"),
        },
        tamper=True,
    )
    assert answer["respCode"] == "11" and verified(sim, answer)
    missing = post(sim, "appTransReq.do", {"txnType": "01"})
    assert missing["respCode"] == "13"
    garbage = unionpay_parse(sim.http.post(f"{API}/queryTrans.do", content=b"\x00\xff").text)
    assert garbage["respCode"] == "10"


def test_auto_pay_notifies_back_url_and_query_says_paid(sim: Simulator, receiver: Receiver) -> None:
    answer, path = consume(sim, receiver, 1000)
    got = receiver.wait(path)
    assert len(got) == 1
    fields = dict(parse_qsl(got[0].body.decode()))
    assert verified(sim, fields)
    assert (fields["respCode"], fields["txnType"], fields["orderId"], fields["txnAmt"]) == (
        "00",
        "01",
        answer["orderId"],
        "1000",
    )
    result = query(sim, answer["orderId"], answer["txnTime"])
    assert (result["respCode"], result["origRespCode"], result["queryId"]) == ("00", "00", fields["queryId"])
    assert verified(sim, result)
    unknown = query(sim, "NOPE" + uuid.uuid4().hex[:12], answer["txnTime"])
    assert unknown["respCode"] == "34"


def test_partial_refund_and_its_notification(sim: Simulator, receiver: Receiver) -> None:
    answer, path = consume(sim, receiver, 1000)
    paid = dict(parse_qsl(receiver.wait(path)[0].body.decode()))
    refund_id = "R" + uuid.uuid4().hex[:20]
    refund_path = f"/unionpay/refund/{refund_id}"
    back = post(
        sim,
        "backTransReq.do",
        {
            "txnType": "04",
            "txnSubType": "00",
            "channelType": "07",
            "orderId": refund_id,
            "origQryId": paid["queryId"],
            "txnAmt": "400",
            "backUrl": receiver.url(refund_path),
        },
    )
    assert back["respCode"] == "00" and verified(sim, back) and back["queryId"]
    over = post(
        sim,
        "backTransReq.do",
        {
            "txnType": "04",
            "txnSubType": "00",
            "channelType": "07",
            "orderId": "R" + uuid.uuid4().hex[:20],
            "origQryId": paid["queryId"],
            "txnAmt": "601",
            "backUrl": receiver.url("/unused"),
        },
    )
    assert over["respCode"] == "33"
    got = receiver.wait(refund_path)
    assert len(got) == 1
    notice = dict(parse_qsl(got[0].body.decode()))
    assert verified(sim, notice)
    assert (notice["txnType"], notice["origQryId"], notice["txnAmt"]) == ("04", paid["queryId"], "400")
    refund_query = query(sim, refund_id, back["txnTime"])
    assert (refund_query["origRespCode"], refund_query["txnType"]) == ("00", "04")
    assert sim.order("unionpay", answer["orderId"])["refunded_amount"] == 400


def test_void_must_be_the_full_amount(sim: Simulator, receiver: Receiver) -> None:
    _answer, path = consume(sim, receiver, 500)
    paid = dict(parse_qsl(receiver.wait(path)[0].body.decode()))
    partial = post(
        sim,
        "backTransReq.do",
        {
            "txnType": "31",
            "txnSubType": "00",
            "channelType": "07",
            "orderId": "V" + uuid.uuid4().hex[:20],
            "origQryId": paid["queryId"],
            "txnAmt": "100",
            "backUrl": receiver.url("/unused"),
        },
    )
    assert partial["respCode"] == "36"
    full = post(
        sim,
        "backTransReq.do",
        {
            "txnType": "31",
            "txnSubType": "00",
            "channelType": "07",
            "orderId": "V" + uuid.uuid4().hex[:20],
            "origQryId": paid["queryId"],
            "txnAmt": "500",
            "backUrl": receiver.url("/unused"),
        },
    )
    assert full["respCode"] == "00"


def test_forced_unknown_resp_code_then_query(sim: Simulator, receiver: Receiver) -> None:
    sim.misbehave("unionpay", decline="03")
    order_id = "U" + uuid.uuid4().hex[:20]
    answer = post(
        sim,
        "appTransReq.do",
        {
            "txnType": "01",
            "txnSubType": "01",
            "channelType": "08",
            "orderId": order_id,
            "txnAmt": "100",
            "currencyCode": "156",
            "backUrl": receiver.url(f"/unionpay/{order_id}"),
        },
    )
    assert answer["respCode"] == "03" and "tn" not in answer
    receiver.wait(f"/unionpay/{order_id}")
    assert query(sim, order_id, answer["txnTime"])["origRespCode"] == "00"


def test_front_trans_req_renders_the_cashier_page(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["unionpay"]
    order_id = "F" + uuid.uuid4().hex[:20]
    params = unionpay_sign(
        {
            "version": "5.1.0",
            "encoding": "UTF-8",
            "signMethod": "01",
            "certId": conf["merchant_cert_id"],
            "merId": conf["mer_id"],
            "accessType": "0",
            "bizType": "000201",
            "txnType": "01",
            "txnSubType": "01",
            "channelType": "07",
            "orderId": order_id,
            "txnAmt": "100",
            "currencyCode": "156",
            "txnTime": datetime.now(BEIJING).strftime("%Y%m%d%H%M%S"),
            "frontUrl": receiver.url("/front"),
            "backUrl": receiver.url("/unused"),
        },
        load_private(Path(conf["merchant_private_key"]).as_posix()),
    )
    page = sim.http.post(conf["front_trans_url"].replace(sim.base, ""), data=params)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and order_id in page.text
    assert sim.order("unionpay", order_id)["amount"] == 100
