"""Card processor adapter: requests, answers, statement and webhooks, with signatures rebuilt here by `hmac`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

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
from workers.channels.card import CardConfig, CardProvider
from workers.domain.types import Method

BASE = "https://cards.example.test"
API_KEY = "sk_test_Zq8mW2vL4nR7tY1uC3eK5hJ9"
WEBHOOK_SECRET = "whsec_b6Pq1Xn4Mz7Ls0Vd3Gh8"
ACCOUNT = "acct_7Hs2Kd9Lq4"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ORDER_ID = "att_01hq3k5x9v7m2c8d4e6f0g1h2j"
REFUND_ID = "rfd_01hq3k5x9v7m2c8d4e6f0g1h2k"
AUTH_ID = "auth_3Nd8Qw1Ze5"
TEST_CARD = "4242424242424242"


def luhn_valid(number: str) -> bool:
    """The check digit every card number carries; used to be sure the "card number" below is a realistic one."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


@pytest.fixture
def config() -> CardConfig:
    return CardConfig(
        base_url=BASE + "/",
        account_id=ACCOUNT,
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        notify_url="https://pay.example.test/notify/card",
    )


@pytest.fixture
def provider(config: CardConfig) -> CardProvider:
    return CardProvider(config)


def order(**changes: object) -> Order:
    values: dict[str, object] = {
        "out_trade_no": ORDER_ID,
        "amount_minor": 4999,
        "currency": "USD",
        "subject": "Course: Linear Algebra",
        "notify_url": "",
        "scene": Scene.CARD,
        "payer": "tok_1Mx9Qp4Lz",
        "created_at": NOW,
        "expires_at": NOW + timedelta(minutes=30),
    }
    values.update(changes)
    return Order(**values)  # type: ignore[arg-type]


def refund_order(**changes: object) -> RefundOrder:
    values: dict[str, object] = {
        "out_trade_no": ORDER_ID,
        "trade_no": AUTH_ID,
        "out_refund_no": REFUND_ID,
        "amount_minor": 1000,
        "total_minor": 4999,
        "currency": "USD",
        "reason": "requested_by_customer",
        "notify_url": "",
        "created_at": NOW,
    }
    values.update(changes)
    return RefundOrder(**values)  # type: ignore[arg-type]


def authorization(**changes: object) -> dict[str, object]:
    return {
        "id": AUTH_ID,
        "status": "captured",
        "decline_code": None,
        "amount": 4999,
        "currency": "usd",
        "account": ACCOUNT,
        "reference": ORDER_ID,
        "created": 1709294400,
        **changes,
    }


def refund_object(**changes: object) -> dict[str, object]:
    return {
        "id": "re_5Tg7Yh",
        "status": "succeeded",
        "amount": 1000,
        "currency": "usd",
        "account": ACCOUNT,
        "reference": REFUND_ID,
        "authorization": AUTH_ID,
        **changes,
    }


def reply(status: int, data: object) -> HttpReply:
    return HttpReply(status, {"content-type": "application/json"}, json.dumps(data).encode())


# -- configuration --------------------------------------------------------------------------------------------


def test_load_reads_the_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "api.key").write_text(API_KEY + "\n")
    (tmp_path / "webhook.secret").write_text(WEBHOOK_SECRET + "\n")
    loaded = CardConfig.load(
        base_url=BASE,
        account_id=ACCOUNT,
        api_key_path=tmp_path / "api.key",
        webhook_secret_path=tmp_path / "webhook.secret",
    )
    assert (loaded.api_key, loaded.webhook_secret) == (API_KEY, WEBHOOK_SECRET)


def test_secrets_never_appear_in_repr(config: CardConfig) -> None:
    text = repr(config) + str(config)
    assert ACCOUNT in text  # the repr works and shows the harmless fields
    assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_config_error_does_not_quote_secrets() -> None:
    with pytest.raises(ValueError) as caught:
        CardConfig(base_url=BASE, account_id="", api_key=API_KEY, webhook_secret=WEBHOOK_SECRET)
    assert API_KEY not in str(caught.value) and WEBHOOK_SECRET not in str(caught.value)


def test_provider_identity(provider: CardProvider) -> None:
    assert provider.method is Method.CARD and provider.merchant_id == ACCOUNT


# -- create ---------------------------------------------------------------------------------------------------


def test_create_request(provider: CardProvider) -> None:
    call = provider.create(order(), NOW)
    assert isinstance(call, HttpCall)
    assert (call.method, call.url, call.purpose, call.idempotent) == (
        "POST",
        BASE + "/v1/authorizations",
        "create",
        True,
    )
    headers = dict(call.headers)
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Idempotency-Key"] == ORDER_ID
    assert headers["Content-Type"] == "application/json"
    assert json.loads(call.body) == {
        "token": "tok_1Mx9Qp4Lz",
        "amount": 4999,
        "currency": "usd",
        "capture": True,
        "reference": ORDER_ID,
        "notification_url": "https://pay.example.test/notify/card",
        "description": "Course: Linear Algebra",
    }


def test_create_uses_the_orders_notify_url(provider: CardProvider) -> None:
    call = provider.create(order(notify_url="https://pay.example.test/n/1"), NOW)
    assert isinstance(call, HttpCall)
    assert json.loads(call.body)["notification_url"] == "https://pay.example.test/n/1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scene": Scene.QR}, "scene card"),
        ({"payer": ""}, "token"),
        ({"payer": "pm_123"}, "token"),
        ({"amount_minor": 0}, "positive"),
        ({"amount_minor": 49.99}, "whole"),
        ({"currency": "dollars"}, "ISO 4217"),
    ],
)
def test_create_refusals(provider: CardProvider, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        provider.create(order(**changes), NOW)


def test_a_card_number_is_refused_and_not_repeated(provider: CardProvider) -> None:
    assert luhn_valid(TEST_CARD) and not luhn_valid("4242424242424241")
    with pytest.raises(ValueError) as caught:
        provider.create(order(payer=TEST_CARD), NOW)
    assert TEST_CARD not in str(caught.value)


def test_captured_is_succeeded(provider: CardProvider) -> None:
    state = provider.read_create(order(), reply(200, authorization()))
    assert state.status is AttemptStatus.SUCCEEDED
    assert (state.trade_no, state.amount_minor, state.currency, state.merchant_id) == (AUTH_ID, 4999, "USD", ACCOUNT)
    assert state.paid_at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", ["authorized", "pending"])
def test_not_yet_captured_is_pending(provider: CardProvider, status: str) -> None:
    state = provider.read_create(order(), reply(201, authorization(status=status)))
    assert state.status is AttemptStatus.PENDING and state.paid_at is None


GENERIC = "declined by the card issuer"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("insufficient_funds", "insufficient funds"),
        ("expired_card", "expired"),
        ("incorrect_cvc", "security code"),
        ("do_not_honor", GENERIC),
        ("fraudulent", GENERIC),
        ("something_new", GENERIC),
        (None, GENERIC),
    ],
)
def test_declines_are_failed_with_a_payer_readable_reason(
    provider: CardProvider, code: str | None, expected: str
) -> None:
    state = provider.read_create(order(), reply(200, authorization(status="declined", decline_code=code)))
    assert state.status is AttemptStatus.FAILED
    assert expected in state.failure_reason
    assert "fraud" not in state.failure_reason.lower()


def test_fraud_reads_exactly_like_a_generic_decline(provider: CardProvider) -> None:
    fraud = provider.read_create(order(), reply(200, authorization(status="declined", decline_code="fraudulent")))
    honor = provider.read_create(order(), reply(200, authorization(status="declined", decline_code="do_not_honor")))
    assert fraud.failure_reason == honor.failure_reason


def test_402_with_an_error_object_is_a_decline(provider: CardProvider) -> None:
    body = {"error": {"type": "card_error", "code": "card_declined", "decline_code": "expired_card", "message": "x"}}
    state = provider.read_create(order(), reply(402, body))
    assert state.status is AttemptStatus.FAILED and "expired" in state.failure_reason


def test_402_with_the_authorization_is_a_decline(provider: CardProvider) -> None:
    state = provider.read_create(order(), reply(402, authorization(status="declined", decline_code="fraudulent")))
    assert (state.status, state.trade_no) == (AttemptStatus.FAILED, AUTH_ID)
    assert GENERIC in state.failure_reason


@pytest.mark.parametrize("status", [400, 422])
def test_validation_errors_are_failed_with_the_processors_message(provider: CardProvider, status: int) -> None:
    body = {"error": {"type": "invalid_request_error", "message": "currency 'usd' is not enabled on this account"}}
    state = provider.read_create(order(), reply(status, body))
    assert state.status is AttemptStatus.FAILED
    assert state.failure_reason == "currency 'usd' is not enabled on this account"


@pytest.mark.parametrize("start", [250, 287, 295, 299])
def test_a_card_number_the_processor_echoes_is_withheld_even_across_the_cut(provider: CardProvider, start: int) -> None:
    """The processor's words are cut to 300 characters for our reasons and logs; a number across the cut must not
    survive in part."""
    body = {"error": {"type": "invalid_request_error", "message": "x" * start + "4111 1111 1111 1111 is refused"}}
    reason = provider.read_create(order(), reply(400, body)).failure_reason
    assert len(reason) <= 300
    assert re.search(r"[0-9](?:[ -]?[0-9]){5,}", reason) is None, reason  # not even six digits of it


def test_401_says_the_key_is_wrong(provider: CardProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="API key"):
        provider.read_create(order(), reply(401, {"error": {"message": "invalid key"}}))


@pytest.mark.parametrize("status", [500, 502, 503, 409, 429, 404])
def test_server_errors_and_conflicts_leave_the_outcome_unknown(provider: CardProvider, status: int) -> None:
    with pytest.raises(ProviderAnswerError, match=str(status)):
        provider.read_create(order(), reply(status, {"error": {"message": "try later"}}))


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b"\xff"])
def test_invalid_json_is_not_trusted(provider: CardProvider, body: bytes) -> None:
    with pytest.raises(ProviderAnswerError, match="JSON"):
        provider.read_create(order(), HttpReply(200, {}, body))


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 49.99},
        {"amount": "4999"},
        {"amount": True},
        {"amount": -1},
        {"status": "refunded_maybe"},
        {"reference": "att_someone_else"},
        {"id": ""},
        {"currency": None},
    ],
)
def test_odd_objects_are_not_trusted(provider: CardProvider, changes: dict[str, object]) -> None:
    with pytest.raises(ProviderAnswerError):
        provider.read_create(order(), reply(200, authorization(**changes)))


def test_a_list_is_not_an_authorization(provider: CardProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="not an authorization"):
        provider.read_create(order(), reply(200, [authorization()]))


# -- query and close ------------------------------------------------------------------------------------------


def _assert_get(call: HttpCall, path: str, purpose: str) -> dict[str, list[str]]:
    url = urlsplit(call.url)
    assert (call.method, f"{url.scheme}://{url.netloc}{url.path}", call.purpose) == ("GET", BASE + path, purpose)
    assert call.idempotent and call.body == b""
    headers = dict(call.headers)
    assert headers["Authorization"] == f"Bearer {API_KEY}" and "Idempotency-Key" not in headers
    return parse_qs(url.query)


def test_query_request(provider: CardProvider) -> None:
    call = provider.query("att 1&x=2", NOW)
    assert _assert_get(call, "/v1/authorizations", "query") == {"reference": ["att 1&x=2"]}


@pytest.mark.parametrize("wrap", [lambda items: {"data": items}, lambda items: items])
def test_read_query(provider: CardProvider, wrap: object) -> None:
    assert callable(wrap)
    state = provider.read_query(ORDER_ID, reply(200, wrap([authorization()])))
    assert (state.status, state.trade_no) == (AttemptStatus.SUCCEEDED, AUTH_ID)
    missing = provider.read_query(ORDER_ID, reply(200, wrap([])))
    assert (missing.status, missing.failure_reason) == (AttemptStatus.FAILED, "not found")


def test_read_query_with_two_objects_raises(provider: CardProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="2 objects"):
        provider.read_query(ORDER_ID, reply(200, {"data": [authorization(), authorization(id="auth_2")]}))


def test_read_query_without_a_list_raises(provider: CardProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="no list"):
        provider.read_query(ORDER_ID, reply(200, {"data": "nope"}))


def test_close_with_an_id_voids(provider: CardProvider) -> None:
    call = provider.close(ORDER_ID, AUTH_ID, NOW)
    assert (call.method, call.url, call.purpose, call.idempotent) == (
        "POST",
        f"{BASE}/v1/authorizations/{AUTH_ID}/void",
        "close",
        True,
    )
    assert dict(call.headers)["Idempotency-Key"] == f"void-{AUTH_ID}"
    assert dict(call.headers)["Authorization"] == f"Bearer {API_KEY}"


def test_close_without_an_id_queries(provider: CardProvider) -> None:
    call = provider.close(ORDER_ID, "", NOW)
    assert _assert_get(call, "/v1/authorizations", "close") == {"reference": [ORDER_ID]}


@pytest.mark.parametrize(
    ("status", "data", "expected"),
    [
        (200, authorization(status="voided"), AttemptStatus.CLOSED),
        (200, authorization(status="captured"), AttemptStatus.SUCCEEDED),
        (200, authorization(status="declined"), AttemptStatus.CLOSED),
        (
            409,
            {"error": {"code": "already_captured", "authorization": AUTH_ID, "message": "x"}},
            AttemptStatus.SUCCEEDED,
        ),
        (400, {"error": {"code": "already_captured", "authorization": authorization()}}, AttemptStatus.SUCCEEDED),
        (200, {"data": []}, AttemptStatus.CLOSED),
        (200, {"data": [authorization(status="declined")]}, AttemptStatus.CLOSED),
        (200, {"data": [authorization()]}, AttemptStatus.SUCCEEDED),
        (200, [authorization(status="pending")], AttemptStatus.PENDING),
    ],
)
def test_read_close(provider: CardProvider, status: int, data: object, expected: AttemptStatus) -> None:
    state = provider.read_close(ORDER_ID, reply(status, data))
    assert state.status is expected
    if expected is AttemptStatus.SUCCEEDED:
        assert state.trade_no == AUTH_ID


def test_read_close_other_refusals_raise(provider: CardProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="404"):
        provider.read_close(ORDER_ID, reply(404, {"error": {"code": "resource_missing", "message": "no such"}}))


# -- refunds --------------------------------------------------------------------------------------------------


def test_refund_request(provider: CardProvider) -> None:
    call = provider.refund(refund_order(), NOW)
    assert (call.method, call.url, call.purpose, call.idempotent) == ("POST", BASE + "/v1/refunds", "refund", True)
    headers = dict(call.headers)
    assert headers["Idempotency-Key"] == REFUND_ID and headers["Authorization"] == f"Bearer {API_KEY}"
    assert json.loads(call.body) == {
        "authorization": AUTH_ID,
        "amount": 1000,
        "reason": "requested_by_customer",
        "reference": REFUND_ID,
    }


@pytest.mark.parametrize(
    ("changes", "message"), [({"trade_no": ""}, "authorization"), ({"amount_minor": 5000}, "outside")]
)
def test_refund_refusals(provider: CardProvider, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        provider.refund(refund_order(**changes), NOW)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("succeeded", RefundStatus.SUCCEEDED), ("pending", RefundStatus.PENDING), ("failed", RefundStatus.FAILED)],
)
def test_read_refund(provider: CardProvider, status: str, expected: RefundStatus) -> None:
    refund = provider.read_refund(refund_order(), reply(200, refund_object(status=status, failure_reason="lost_card")))
    assert (refund.status, refund.refund_no, refund.amount_minor, refund.currency) == (
        expected,
        "re_5Tg7Yh",
        1000,
        "USD",
    )
    assert ("lost_card" in refund.failure_reason) == (expected is RefundStatus.FAILED)


def test_read_refund_validation_error(provider: CardProvider) -> None:
    body = {"error": {"message": "amount exceeds the captured amount"}}
    refund = provider.read_refund(refund_order(), reply(400, body))
    assert (refund.status, refund.failure_reason) == (RefundStatus.FAILED, "amount exceeds the captured amount")


def test_read_refund_of_another_account_raises(provider: CardProvider) -> None:
    with pytest.raises(ProviderAnswerError, match="account"):
        provider.read_refund(refund_order(), reply(200, refund_object(account="acct_other")))


@pytest.mark.parametrize("status", [500, 401, 429])
def test_read_refund_unknown(provider: CardProvider, status: int) -> None:
    with pytest.raises(ProviderAnswerError):
        provider.read_refund(refund_order(), reply(status, {}))


def test_refund_query(provider: CardProvider) -> None:
    call = provider.refund_query(refund_order(), NOW)
    assert _assert_get(call, "/v1/refunds", "refund_query") == {"reference": [REFUND_ID]}
    found = provider.read_refund_query(refund_order(), reply(200, {"data": [refund_object()]}))
    assert found.status is RefundStatus.SUCCEEDED
    missing = provider.read_refund_query(refund_order(), reply(200, {"data": []}))
    assert (missing.status, missing.failure_reason) == (RefundStatus.FAILED, "not found")


# -- statement ------------------------------------------------------------------------------------------------

STATEMENT = (
    "type,id,reference,authorization,amount,currency,status,created\r\n"
    f"payment,{AUTH_ID},{ORDER_ID},,4999,usd,captured,1709294400\r\n"
    f"refund,re_5Tg7Yh,{REFUND_ID},{AUTH_ID},1000,usd,succeeded,2024-03-01T20:30:00+08:00\r\n"
)


def test_statement_request(provider: CardProvider) -> None:
    call = provider.statement(date(2024, 3, 1), NOW)
    _assert_get(call, "/v1/statements/2024-03-01", "statement")
    assert dict(call.headers)["Accept"] == "text/csv"


def test_read_statement(provider: CardProvider) -> None:
    lines = provider.read_statement(date(2024, 3, 1), HttpReply(200, {}, STATEMENT.encode()), NOW)
    assert isinstance(lines, list) and len(lines) == 2
    payment, refund = lines
    assert payment.kind is NotificationKind.PAYMENT
    assert (payment.out_trade_no, payment.trade_no, payment.out_refund_no) == (ORDER_ID, AUTH_ID, "")
    assert (payment.amount_minor, payment.currency, payment.status, payment.at) == (4999, "USD", "captured", NOW)
    assert refund.kind is NotificationKind.REFUND
    assert (refund.out_trade_no, refund.trade_no, refund.out_refund_no) == ("", AUTH_ID, REFUND_ID)
    assert (refund.amount_minor, refund.at) == (1000, datetime(2024, 3, 1, 12, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    "text",
    [
        "type,id,reference,amount,currency,status,created\r\npayment,a,b,1,usd,captured,1\r\n",  # a column missing
        STATEMENT + "payment,a,b,,12.50,usd,captured,1709294400\r\n",
        STATEMENT + "chargeback,a,b,,1250,usd,lost,1709294400\r\n",
        STATEMENT + "payment,a,b,,1250,usd,captured,2024-03-01T20:30:00\r\n",  # no offset
        STATEMENT + "payment,a,b\r\n",
    ],
)
def test_read_statement_refuses_rows_it_cannot_read(provider: CardProvider, text: str) -> None:
    with pytest.raises(ProviderAnswerError):
        provider.read_statement(date(2024, 3, 1), HttpReply(200, {}, text.encode()), NOW)


@pytest.mark.parametrize(("status", "message"), [(404, "no card statement"), (503, "503"), (401, "API key")])
def test_read_statement_errors(provider: CardProvider, status: int, message: str) -> None:
    with pytest.raises(ProviderAnswerError, match=message):
        provider.read_statement(date(2024, 3, 1), HttpReply(status, {}, b"<html>nope</html>"), NOW)


# -- webhooks -------------------------------------------------------------------------------------------------


def sign_webhook(body: bytes, at: datetime = NOW, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"card-signature": f"t={timestamp},v1={digest}"}


def event(kind: str, obj: dict[str, object], event_id: str = "evt_9Kd2") -> bytes:
    return json.dumps({"id": event_id, "type": kind, "data": obj}).encode()


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        ("authorization.captured", authorization(), AttemptStatus.SUCCEEDED),
        (
            "authorization.declined",
            authorization(status="declined", decline_code="incorrect_cvc"),
            AttemptStatus.FAILED,
        ),
        ("authorization.voided", authorization(status="voided"), AttemptStatus.CLOSED),
    ],
)
def test_payment_webhooks(provider: CardProvider, kind: str, obj: dict[str, object], expected: AttemptStatus) -> None:
    body = event(kind, obj)
    note = provider.read_notification(sign_webhook(body), body, NOW)
    assert (note.kind, note.notification_id, note.nonce) == (NotificationKind.PAYMENT, "evt_9Kd2", "")
    assert note.payment is not None and note.refund is None
    assert (note.payment.status, note.payment.out_trade_no, note.payment.amount_minor) == (expected, ORDER_ID, 4999)
    assert note.payment.merchant_id == ACCOUNT


@pytest.mark.parametrize(
    ("kind", "expected"), [("refund.succeeded", RefundStatus.SUCCEEDED), ("refund.failed", RefundStatus.FAILED)]
)
def test_refund_webhooks(provider: CardProvider, kind: str, expected: RefundStatus) -> None:
    body = event(kind, refund_object(status=kind.split(".")[1]))
    note = provider.read_notification(sign_webhook(body), body, NOW)
    assert note.kind is NotificationKind.REFUND and note.refund is not None
    assert (note.refund.status, note.refund.out_refund_no, note.refund.refund_no) == (expected, REFUND_ID, "re_5Tg7Yh")
    assert note.out_trade_no == ""


def test_stripe_style_data_object_is_read(provider: CardProvider) -> None:
    body = json.dumps({"id": "evt_1", "type": "authorization.captured", "data": {"object": authorization()}}).encode()
    assert provider.read_notification(sign_webhook(body), body, NOW).payment is not None


def test_header_name_is_case_insensitive_and_rolled_secrets_work(provider: CardProvider) -> None:
    body = event("authorization.captured", authorization())
    good = sign_webhook(body)["card-signature"]
    old = sign_webhook(body, secret="whsec_old")["card-signature"].split(",")[1]
    headers = {"Card-Signature": f"{good.split(',')[0]},{old},{good.split(',')[1]}"}
    assert provider.read_notification(headers, body, NOW).payment is not None


def _rejected(provider: CardProvider, headers: dict[str, str], body: bytes, now: datetime = NOW) -> str:
    with pytest.raises(NotificationRejected) as caught:
        provider.read_notification(headers, body, now)
    assert WEBHOOK_SECRET not in str(caught.value)
    return caught.value.reason


def test_forged_webhooks(provider: CardProvider) -> None:
    body = event("authorization.captured", authorization())
    assert _rejected(provider, sign_webhook(body, secret="whsec_guess"), body) == "bad_signature"
    assert _rejected(provider, sign_webhook(body), body.replace(b"4999", b"9999")) == "bad_signature"
    assert _rejected(provider, {}, body) == "bad_signature"
    assert _rejected(provider, {"card-signature": "t=abc,v1=00"}, body) == "bad_signature"
    assert _rejected(provider, {"card-signature": f"t={int(NOW.timestamp())}"}, body) == "bad_signature"


@pytest.mark.parametrize(("skew", "reason"), [(301, "stale_timestamp"), (-301, "stale_timestamp")])
def test_stale_webhooks(provider: CardProvider, skew: int, reason: str) -> None:
    body = event("authorization.captured", authorization())
    assert _rejected(provider, sign_webhook(body, at=NOW + timedelta(seconds=skew)), body) == reason


@pytest.mark.parametrize("skew", [300, -300, 0])
def test_webhooks_within_the_window(provider: CardProvider, skew: int) -> None:
    body = event("authorization.captured", authorization())
    assert provider.read_notification(sign_webhook(body, at=NOW + timedelta(seconds=skew)), body, NOW).payment


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"id": "evt_1", "type": "authorization.captured"}).encode(),
        event("customer.created", authorization()),
        event("authorization.captured", authorization(status="declined")),  # type and object disagree
        event("authorization.captured", authorization(amount=49.99)),
        event("authorization.captured", {k: v for k, v in authorization().items() if k != "reference"}),
        event("refund.succeeded", refund_object(account="acct_other")),
        event("refund.succeeded", refund_object(), event_id=""),
    ],
)
def test_malformed_webhooks(provider: CardProvider, body: bytes) -> None:
    assert _rejected(provider, sign_webhook(body), body) == "malformed"


def test_acknowledge(provider: CardProvider) -> None:
    ok, retry = provider.acknowledge(True), provider.acknowledge(False)
    assert (ok.status, json.loads(ok.body)) == (200, {"received": True})
    assert retry.status == 400


# -- the API key stays secret ---------------------------------------------------------------------------------


def test_api_key_never_appears_in_an_exception(provider: CardProvider) -> None:
    echo = {"error": {"message": f"bad header Authorization: Bearer {API_KEY}"}}
    attempts = [
        lambda: provider.read_create(order(), reply(401, echo)),
        lambda: provider.read_create(order(), reply(404, echo)),
        lambda: provider.read_create(order(), reply(500, echo)),
        lambda: provider.read_create(order(), HttpReply(200, {}, b"Bearer " + API_KEY.encode())),
        lambda: provider.read_query(ORDER_ID, reply(409, echo)),
        lambda: provider.read_refund(refund_order(), reply(403, echo)),
        lambda: provider.read_close(ORDER_ID, reply(404, echo)),
        lambda: provider.read_statement(date(2024, 3, 1), HttpReply(404, {}, API_KEY.encode()), NOW),
        lambda: provider.create(order(payer=API_KEY), NOW),
    ]
    for attempt in attempts:
        with pytest.raises((ProviderAnswerError, ValueError)) as caught:
            attempt()
        assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value)


def test_api_key_never_appears_in_a_failure_reason(provider: CardProvider) -> None:
    echo = {"error": {"message": f"cannot use key {API_KEY} here"}}
    state = provider.read_create(order(), reply(400, echo))
    assert isinstance(state, ProviderState) and state.status is AttemptStatus.FAILED
    assert API_KEY not in state.failure_reason and "[redacted]" in state.failure_reason


def test_rebuilt_config_keeps_the_key_out_of_repr(config: CardConfig) -> None:
    assert API_KEY not in repr(replace(config, notify_url="https://x.example.test"))
