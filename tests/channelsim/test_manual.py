"""Manual mode (pay_after_ms=0): closing before payment, the pay/fail/abandon controls, and each provider's bill,
with and without the statement faults."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.channelsim import clients
from tests.channelsim.conftest import Receiver, Simulator, load_public
from tests.channelsim.signing import BEIJING, wechat_signed

PAY_AFTER_MS = 0
FAULTS = ["missing_line", "extra_line", "amount_differs", "duplicate_line", "status_differs"]


@dataclass(frozen=True)
class Row:
    out_trade_no: str
    kind: str  # payment | refund
    amount: int
    status: str


def fen(text: str) -> int:
    whole, _, frac = text.strip().lstrip("-").partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def pay(sim: Simulator, channel: str, out: str) -> dict[str, Any]:
    response = sim.control("POST", f"/orders/{channel}/{out}/pay")
    assert response.status_code == 200, response.text
    return dict(response.json())


def refunds_done(order: dict[str, Any]) -> bool:
    return all(r["status"] == "succeeded" for r in order["refunds"])


# closing before payment and the controls
def test_alipay_close_before_pay(sim: Simulator) -> None:
    out = "A" + uuid.uuid4().hex[:20]
    made, _, _ = clients.alipay(
        sim, "alipay.trade.precreate", {"out_trade_no": out, "total_amount": "2.00", "subject": "x"}
    )
    assert made["code"] == "10000"
    query, _, _ = clients.alipay(sim, "alipay.trade.query", {"out_trade_no": out})
    assert query["trade_status"] == "WAIT_BUYER_PAY"
    closed, _, _ = clients.alipay(sim, "alipay.trade.close", {"out_trade_no": out})
    assert closed["code"] == "10000" and closed["out_trade_no"] == out
    query, _, _ = clients.alipay(sim, "alipay.trade.query", {"out_trade_no": out})
    assert query["trade_status"] == "TRADE_CLOSED"
    assert sim.control("POST", f"/orders/alipay/{out}/pay").status_code == 409
    again, _, _ = clients.alipay(
        sim, "alipay.trade.precreate", {"out_trade_no": out, "total_amount": "2.00", "subject": "x"}
    )
    assert again["sub_code"] == "ACQ.TRADE_HAS_CLOSE"


def test_wechat_close_before_pay(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["wechatpay"]
    out = "W" + uuid.uuid4().hex[:20]
    assert clients.wechat_native(sim, out, 100, receiver.url("/unused")).status_code == 200
    closed = clients.wechat(sim, "POST", f"/v3/pay/transactions/out-trade-no/{out}/close", {"mchid": conf["mchid"]})
    assert closed.status_code == 204 and closed.text == ""
    assert wechat_signed(closed.headers, "", load_public(conf["platform_public_key"]))
    query = clients.wechat(sim, "GET", f"/v3/pay/transactions/out-trade-no/{out}?mchid={conf['mchid']}")
    assert query.json()["trade_state"] == "CLOSED"


def test_card_void_before_the_buyer_authenticates(sim: Simulator, receiver: Receiver) -> None:
    reference = "C" + uuid.uuid4().hex[:20]
    pending = clients.card_authorize(sim, reference, 700, receiver.url("/unused"), number="4000002500003155")
    assert pending.json()["status"] == "pending"
    voided = clients.card(sim, "POST", f"/authorizations/{pending.json()['id']}/void")
    assert voided.json()["status"] == "voided"
    assert sim.control("POST", f"/orders/card/{reference}/pay").status_code == 409


def test_fail_and_abandon_controls(sim: Simulator, receiver: Receiver) -> None:
    conf = sim.merchant["wechatpay"]
    out = "W" + uuid.uuid4().hex[:20]
    clients.wechat_native(sim, out, 100, receiver.url("/unused"))
    failed = sim.control("POST", f"/orders/wechatpay/{out}/fail", json={"code": "BANK_ERROR"})
    assert failed.json()["status"] == "failed" and failed.json()["fail_code"] == "BANK_ERROR"
    query = clients.wechat(sim, "GET", f"/v3/pay/transactions/out-trade-no/{out}?mchid={conf['mchid']}")
    assert query.json()["trade_state"] == "PAYERROR"

    order_id = "U" + uuid.uuid4().hex[:20]
    consumed = clients.unionpay_consume(sim, order_id, 100, receiver.url("/unused"))
    abandoned = sim.control("POST", f"/orders/unionpay/{order_id}/abandon")
    assert abandoned.json()["abandoned"] is True and abandoned.json()["status"] == "pending"
    status = clients.unionpay(
        sim, "queryTrans.do", {"txnType": "00", "txnSubType": "00", "orderId": order_id, "txnTime": consumed["txnTime"]}
    )
    assert status["origRespCode"] == "05"
    assert sim.control("POST", "/orders/unionpay/nope/pay").status_code == 404


# each provider's bill, read through the provider's own API
def alipay_rows(sim: Simulator) -> list[Row]:
    day = datetime.now(BEIJING).strftime("%Y-%m-%d")
    answer, _, _ = clients.alipay(
        sim, "alipay.data.dataservice.bill.downloadurl.query", {"bill_type": "trade", "bill_date": day}
    )
    text = httpx.get(answer["bill_download_url"], trust_env=False).text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rows = list(csv.reader(lines))[1:]
    return [Row(r[1], "payment" if r[2] == "交易" else "refund", fen(r[8]), r[12]) for r in rows]


def wechat_rows(sim: Simulator) -> list[Row]:
    day = datetime.now(BEIJING).strftime("%Y-%m-%d")
    answer = clients.wechat(sim, "GET", f"/v3/bill/tradebill?bill_date={day}&bill_type=ALL")
    assert answer.status_code == 200 and wechat_signed(
        answer.headers, answer.text, load_public(sim.merchant["wechatpay"]["platform_public_key"])
    )
    url = answer.json()["download_url"].replace(sim.base + "/wechatpay", "")
    text = clients.wechat(sim, "GET", url).text
    assert hashlib.sha1(text.encode()).hexdigest() == answer.json()["hash_value"]
    rows = []
    for line in text.splitlines()[1:]:
        if line.startswith("总交易单数"):
            break
        f = [field.lstrip("`") for field in line.split(",")]
        if f[9] == "REFUND":
            rows.append(Row(f[6], "refund", fen(f[16]), f[19]))
        else:
            rows.append(Row(f[6], "payment", fen(f[12]), f[9]))
    return rows


def unionpay_rows(sim: Simulator) -> list[Row]:
    answer = clients.unionpay(
        sim,
        "filedownload",
        {
            "txnType": "76",
            "txnSubType": "01",
            "bizType": "000000",
            "fileType": "00",
            "settleDate": datetime.now(BEIJING).strftime("%m%d"),
        },
    )
    assert answer["respCode"] == "00", answer
    text = zlib.decompress(base64.b64decode(answer["fileContent"])).decode()
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        kind, order_id, _query_id, amount, _currency, status, _time, _orig = line.split("|")
        rows.append(Row(order_id, "payment" if kind == "01" else "refund", int(amount), status))
    return rows


def card_rows(sim: Simulator) -> list[Row]:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    text = clients.card(sim, "GET", f"/statements/{day}").text
    return [
        Row(
            r["reference"],
            r["type"],
            int(r["amount"]),
            r["status"],
        )
        for r in csv.DictReader(io.StringIO(text))
    ]


def alipay_day(sim: Simulator, receiver: Receiver) -> tuple[str, str]:
    out = "A" + uuid.uuid4().hex[:20]
    clients.alipay(sim, "alipay.trade.precreate", {"out_trade_no": out, "total_amount": "10.00", "subject": "x"})
    pay(sim, "alipay", out)
    clients.alipay(sim, "alipay.trade.refund", {"out_trade_no": out, "refund_amount": "2.50", "out_request_no": "rq1"})
    return out, "rq1"


def wechat_day(sim: Simulator, receiver: Receiver) -> tuple[str, str]:
    out = "W" + uuid.uuid4().hex[:20]
    clients.wechat_native(sim, out, 1000, receiver.url("/unused"))
    pay(sim, "wechatpay", out)
    clients.wechat(
        sim,
        "POST",
        "/v3/refund/domestic/refunds",
        {"out_trade_no": out, "out_refund_no": f"R{out}", "amount": {"refund": 250, "total": 1000, "currency": "CNY"}},
    )
    return out, f"R{out}"


def unionpay_day(sim: Simulator, receiver: Receiver) -> tuple[str, str]:
    out = "U" + uuid.uuid4().hex[:20]
    clients.unionpay_consume(sim, out, 1000, receiver.url("/unused"))
    query_id = pay(sim, "unionpay", out)["trade_no"]
    refund_id = "R" + uuid.uuid4().hex[:20]
    clients.unionpay(
        sim,
        "backTransReq.do",
        {
            "txnType": "04",
            "txnSubType": "00",
            "channelType": "07",
            "orderId": refund_id,
            "origQryId": query_id,
            "txnAmt": "250",
            "backUrl": receiver.url("/unused"),
        },
    )
    return out, refund_id


def card_day(sim: Simulator, receiver: Receiver) -> tuple[str, str]:
    out = "C" + uuid.uuid4().hex[:20]
    auth = clients.card_authorize(sim, out, 1000, receiver.url("/unused")).json()
    clients.card(sim, "POST", "/refunds", {"authorization": auth["id"], "amount": 250, "reference": f"R{out}"})
    return out, f"R{out}"


CHANNELS = {
    "alipay": (alipay_day, alipay_rows),
    "wechatpay": (wechat_day, wechat_rows),
    "unionpay": (unionpay_day, unionpay_rows),
    "card": (card_day, card_rows),
}


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_statement_lists_the_day_and_the_faults_change_it(sim: Simulator, receiver: Receiver, channel: str) -> None:
    make_day, read = CHANNELS[channel]
    out, refund_no = make_day(sim, receiver)
    sim.wait_order(channel, out, refunds_done)
    base = read(sim)
    assert any(r.out_trade_no == out and r.kind == "payment" and r.amount == 1000 for r in base)
    assert any(r.kind == "refund" and r.out_trade_no in (out, refund_no) and r.amount == 250 for r in base)
    control = sim.control("GET", "/statement", params={"channel": channel})
    assert control.status_code == 200 and out in control.text

    for fault in FAULTS:
        sim.misbehave(channel, clear=True, statement=[fault])
        faulted = read(sim)
        if fault == "missing_line":
            assert faulted == base[1:]
        elif fault == "extra_line":
            assert faulted[:-1] == base and faulted[-1].out_trade_no.startswith("SIMEXTRA")
        elif fault == "amount_differs":
            assert faulted[0].amount == base[0].amount + 1 and faulted[1:] == base[1:]
        elif fault == "duplicate_line":
            assert faulted == [base[0], *base]
        else:
            assert faulted[0].status != base[0].status and faulted[1:] == base[1:]
    sim.misbehave(channel, clear=True)
    assert read(sim) == base


def test_wechat_has_no_bill_for_an_empty_day(sim: Simulator) -> None:
    response = clients.wechat(sim, "GET", "/v3/bill/tradebill?bill_date=2001-01-01&bill_type=ALL")
    assert (response.status_code, response.json()["code"]) == (400, "NO_STATEMENT_EXIST")


def test_merchant_file_has_what_an_adapter_needs(sim: Simulator) -> None:
    merchant = sim.merchant
    for provider in ("alipay", "wechatpay", "unionpay"):
        for key in ("merchant_private_key", "platform_public_key"):
            path = Path(merchant[provider][key])
            assert path.exists() and path.parent.parent == sim.data_dir / "channel-sim"
        assert (Path(merchant[provider]["merchant_private_key"]).stat().st_mode & 0o777) == 0o600
    assert len(Path(merchant["wechatpay"]["apiv3_key_path"]).read_bytes().strip()) == 32
    assert merchant["alipay"]["gateway_url"] == f"{sim.base}/alipay/gateway.do"
    log = sim.log.read_text()
    secret = Path(merchant["card"]["api_key_path"]).read_text().strip()
    assert secret not in log and "PRIVATE KEY" not in log
