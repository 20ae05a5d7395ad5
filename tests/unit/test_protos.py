"""The generated stubs match protos/ exactly, and the v1 contract keeps its field numbers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from paygate.v1 import payment_gateway_pb2 as pb
from scripts import gen_protos as protogen
from tests.support import buf_binary


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    produced = protogen.generate(tmp_path)
    assert produced, "the generator produced nothing"
    for path in produced:
        committed = protogen.REPO_ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is not committed; run `make protos`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale or hand-edited; run `make protos`"


CONTRACT = {
    "TopUpRequest": ["order_id", "user_id", "amount_minor", "currency", "method"],
    "CreatePaymentRequest": ["order_id", "user_id", "amount_minor", "currency", "method", "payee_id", "description"],
    "GetPaymentRequest": ["payment_id", "order_id"],
    "Payment": [
        "payment_id",
        "order_id",
        "user_id",
        "amount_minor",
        "currency",
        "method",
        "status",
        "refunded_minor",
        "failure_reason",
    ],
    "GetBalanceRequest": ["user_id", "currency"],
    "Balance": ["user_id", "currency", "available_minor"],
    "RefundPaymentRequest": ["payment_id", "refund_id", "amount_minor", "reason"],
    "TransferRequest": ["transfer_id", "from_user_id", "to_user_id", "amount_minor", "currency"],
    "Refund": ["refund_id", "payment_id", "amount_minor"],
    "Transfer": ["transfer_id", "from_user_id", "to_user_id", "amount_minor", "currency"],
    "ListTransactionsRequest": ["user_id", "page_size", "page_token"],
    "ListTransactionsResponse": ["transactions", "next_page_token"],
    "Transaction": ["entry_id", "amount_minor", "currency"],
    "QuotePriceRequest": ["list_price_minor", "discount_rate", "tax_rate", "currency"],
    "PriceQuote": ["amount_minor", "discount_minor", "tax_minor"],
    "TokenizeCardRequest": ["card_number", "exp_month", "exp_year"],
    "CardToken": ["token", "masked", "brand", "exp_month", "exp_year"],
}


@pytest.mark.parametrize("message", sorted(CONTRACT))
def test_contract_fields_keep_their_numbers(message: str) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    for number, name in enumerate(CONTRACT[message], start=1):
        assert descriptor.fields_by_name[name].number == number, f"{message}.{name}"


def test_appended_fields_keep_their_numbers() -> None:
    payment = pb.DESCRIPTOR.message_types_by_name["Payment"]
    assert payment.fields_by_name["card_masked"].number == 27
    for message in ("TopUpRequest", "CreatePaymentRequest"):
        assert pb.DESCRIPTOR.message_types_by_name[message].fields_by_name["card_token"].number in (7, 10)


def test_money_is_int64_minor_units() -> None:
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        for field in message.fields:
            if field.name.endswith("_minor"):
                assert field.type == field.TYPE_INT64, f"{message.name}.{field.name}"


def test_service_and_enums() -> None:
    service = pb.DESCRIPTOR.services_by_name["PaymentGateway"]
    assert pb.DESCRIPTOR.package == "paygate.v1"
    assert set(service.methods_by_name) == {
        "TopUp",
        "CreatePayment",
        "GetPayment",
        "GetBalance",
        "RefundPayment",
        "Transfer",
        "ListTransactions",
        "QuotePrice",
        "StreamEvents",
        "CreateWebhookEndpoint",
        "ListWebhookEndpoints",
        "DeleteWebhookEndpoint",
        "RotateWebhookEndpointSecret",
        "TokenizeCard",
    }
    streaming = {name for name, method in service.methods_by_name.items() if method.server_streaming}
    assert streaming == {"StreamEvents"}
    assert not any(method.client_streaming for method in service.methods_by_name.values())
    # Event types are part of the wire contract (webhooks carry their names, filters their numbers).
    assert dict(pb.EventType.items()) == {
        "EVENT_TYPE_UNSPECIFIED": 0,
        "EVENT_TYPE_PAYMENT_CREATED": 1,
        "EVENT_TYPE_PAYMENT_SUCCEEDED": 2,
        "EVENT_TYPE_PAYMENT_FAILED": 3,
        "EVENT_TYPE_PAYMENT_CLOSED": 4,
        "EVENT_TYPE_REFUND_CREATED": 5,
        "EVENT_TYPE_REFUND_SUCCEEDED": 6,
        "EVENT_TYPE_REFUND_FAILED": 7,
        "EVENT_TYPE_TRANSFER_SUCCEEDED": 8,
        "EVENT_TYPE_PAYMENT_LATE_REFUNDED": 9,
        "EVENT_TYPE_RECONCILIATION_MISMATCH": 10,
        "EVENT_TYPE_PAYMENT_IN_REVIEW": 11,
        "EVENT_TYPE_PAYMENT_RELEASED": 12,
    }
    assert dict(pb.PaymentMethod.items()) == {
        "PAYMENT_METHOD_UNSPECIFIED": 0,
        "PAYMENT_METHOD_WALLET": 1,
        "PAYMENT_METHOD_ALIPAY": 2,
        "PAYMENT_METHOD_WECHAT_PAY": 3,
        "PAYMENT_METHOD_UNIONPAY": 4,
        "PAYMENT_METHOD_CARD": 5,
        "PAYMENT_METHOD_SANDBOX": 6,
    }
    assert dict(pb.PaymentStatus.items()) == {
        "PAYMENT_STATUS_UNSPECIFIED": 0,
        "PAYMENT_STATUS_PENDING": 1,
        "PAYMENT_STATUS_SUCCEEDED": 2,
        "PAYMENT_STATUS_FAILED": 3,
        "PAYMENT_STATUS_CLOSED": 4,
        "PAYMENT_STATUS_PARTIALLY_REFUNDED": 5,
        "PAYMENT_STATUS_REFUNDED": 6,
        "PAYMENT_STATUS_IN_REVIEW": 7,
    }
    assert dict(pb.RiskDecision.items()) == {
        "RISK_DECISION_UNSPECIFIED": 0,
        "RISK_DECISION_ALLOW": 1,
        "RISK_DECISION_REVIEW": 2,
        "RISK_DECISION_DENY": 3,
    }
    assert pb.CreatePaymentRequest.DESCRIPTOR.fields_by_name["risk"].number == 12
    assert pb.TopUpRequest.DESCRIPTOR.fields_by_name["risk"].number == 9
    assert pb.Payment.DESCRIPTOR.fields_by_name["risk"].number == 28


def test_protos_pass_buf_lint() -> None:
    result = subprocess.run(
        [buf_binary(), "lint", "protos"],
        cwd=protogen.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
