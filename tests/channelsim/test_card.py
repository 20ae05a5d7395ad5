"""The card processor: bearer key, tokens, authorizations, capture, refunds, declines, webhooks, idempotency."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.channelsim.clients import card as api
from tests.channelsim.clients import card_token as tokenize
from tests.channelsim.conftest import Receiver, Simulator
from tests.channelsim.signing import card_signature_ok

DECLINING = {
    "insufficient_funds": "4000000000009995",
    "do_not_honor": "4000000000000002",
    "expired_card": "4000000000000069",
    "incorrect_cvc": "4000000000000127",
    "fraudulent": "4100000000000019",
}


def authorize(
    sim: Simulator, receiver: Receiver, number: str = "4242424242424242", capture: bool = True, amount: int = 1000
) -> tuple[httpx.Response, str]:
    reference = "C" + uuid.uuid4().hex[:20]
    path = f"/card/{reference}"
    response = api(
        sim,
        "POST",
        "/authorizations",
        {
            "token": tokenize(sim, number),
            "amount": amount,
            "currency": "usd",
            "capture": capture,
            "reference": reference,
            "notification_url": receiver.url(path),
        },
    )
    return response, path


def secret(sim: Simulator) -> str:
    return Path(sim.merchant["card"]["webhook_secret_path"]).read_text().strip()


def test_captured_authorization_and_its_signed_webhook(sim: Simulator, receiver: Receiver) -> None:
    response, path = authorize(sim, receiver)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("auth_") and body["status"] == "captured" and body["decline_code"] is None
    got = receiver.wait(path)
    assert len(got) == 1
    assert card_signature_ok(got[0].headers["Card-Signature"], got[0].body, secret(sim))
    assert not card_signature_ok(got[0].headers["Card-Signature"], got[0].body + b" ", secret(sim))
    event = json.loads(got[0].body)
    assert event["type"] == "authorization.captured" and event["data"]["object"]["id"] == body["id"]
    listed = api(sim, "GET", f"/authorizations?reference={body['reference']}").json()["data"]
    assert [a["id"] for a in listed] == [body["id"]]


def test_wrong_api_key_and_bad_cards_are_refused(sim: Simulator) -> None:
    refused = sim.http.post("/card/v1/tokens", json={}, headers={"Authorization": "Bearer sk_test_wrong"})
    assert (refused.status_code, refused.json()["error"]["type"]) == (401, "authentication_error")
    luhn = api(sim, "POST", "/tokens", {"number": "4242424242424241", "exp_month": 1, "exp_year": 2099, "cvc": "1"})
    assert (luhn.status_code, luhn.json()["error"]["code"]) == (402, "incorrect_number")
    not_json = sim.http.post(
        "/card/v1/authorizations",
        content=b"[1",
        headers={"Authorization": f"Bearer {Path(sim.merchant['card']['api_key_path']).read_text().strip()}"},
    )
    assert (not_json.status_code, not_json.json()["error"]["type"]) == (400, "invalid_request_error")


@pytest.mark.parametrize("code", sorted(DECLINING))
def test_each_test_card_declines_with_its_code(sim: Simulator, receiver: Receiver, code: str) -> None:
    response, path = authorize(sim, receiver, DECLINING[code])
    assert response.status_code == 402
    assert (response.json()["status"], response.json()["decline_code"]) == ("declined", code)
    assert response.json()["error"]["decline_code"] == code
    event = json.loads(receiver.wait(path)[0].body)
    assert event["type"] == "authorization.declined" and event["data"]["object"]["decline_code"] == code


@pytest.mark.parametrize("code", ["insufficient_funds", "fraudulent"])
def test_misbehaviour_declines_the_next_authorization(sim: Simulator, receiver: Receiver, code: str) -> None:
    sim.misbehave("card", decline=code)
    declined, _ = authorize(sim, receiver)
    assert (declined.status_code, declined.json()["decline_code"]) == (402, code)
    approved, _ = authorize(sim, receiver)
    assert approved.json()["status"] == "captured"


def test_authorize_then_partial_capture_then_partial_refunds(sim: Simulator, receiver: Receiver) -> None:
    response, path = authorize(sim, receiver, capture=False, amount=1000)
    auth = response.json()
    assert auth["status"] == "authorized"
    captured = api(sim, "POST", f"/authorizations/{auth['id']}/capture", {"amount": 800})
    assert (captured.json()["status"], captured.json()["amount_captured"]) == ("captured", 800)
    refund = api(sim, "POST", "/refunds", {"authorization": auth["id"], "amount": 300, "reference": "rf-1"})
    assert refund.status_code == 200 and refund.json()["status"] == "pending"
    too_much = api(sim, "POST", "/refunds", {"authorization": auth["id"], "amount": 501})
    assert (too_much.status_code, too_much.json()["error"]["code"]) == (400, "amount_too_large")
    events = [json.loads(r.body) for r in receiver.wait(path, 3)]
    assert [e["type"] for e in events] == ["authorization.authorized", "authorization.captured", "refund.succeeded"]
    assert events[2]["data"]["object"]["amount"] == 300
    fetched = api(sim, "GET", f"/refunds/{refund.json()['id']}").json()
    assert fetched["status"] == "succeeded"
    assert api(sim, "GET", f"/authorizations/{auth['id']}").json()["amount_refunded"] == 300


def test_void_an_uncaptured_authorization(sim: Simulator, receiver: Receiver) -> None:
    response, _path = authorize(sim, receiver, capture=False)
    voided = api(sim, "POST", f"/authorizations/{response.json()['id']}/void")
    assert voided.json()["status"] == "voided"
    again = api(sim, "POST", f"/authorizations/{response.json()['id']}/capture")
    assert again.json()["error"]["code"] == "authorization_unexpected_state"


def test_idempotency_key_replays_and_refuses_a_different_body(sim: Simulator, receiver: Receiver) -> None:
    token = tokenize(sim)
    body = {
        "token": token,
        "amount": 500,
        "currency": "usd",
        "reference": "C" + uuid.uuid4().hex[:20],
        "notification_url": receiver.url("/unused"),
    }
    key = uuid.uuid4().hex
    first = api(sim, "POST", "/authorizations", body, key=key)
    second = api(sim, "POST", "/authorizations", body, key=key)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json() and second.headers.get("Idempotent-Replayed") == "true"
    assert len(api(sim, "GET", f"/authorizations?reference={body['reference']}").json()["data"]) == 1
    different = api(sim, "POST", "/authorizations", {**body, "amount": 501}, key=key)
    assert (different.status_code, different.json()["error"]["type"]) == (400, "idempotency_error")
    without_key = api(sim, "POST", "/authorizations", body)
    assert without_key.json()["error"]["code"] == "token_already_used"


def test_three_ds_card_pays_after_the_delay(sim: Simulator, receiver: Receiver) -> None:
    response, path = authorize(sim, receiver, "4000002500003155")
    assert response.json()["status"] == "pending"
    event = json.loads(receiver.wait(path)[0].body)
    assert event["type"] == "authorization.captured"
    assert api(sim, "GET", f"/authorizations/{response.json()['id']}").json()["status"] == "captured"
