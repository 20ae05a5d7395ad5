"""Domain records → protobuf responses (the 'encode' step of decode → service → encode)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from paygate.v1 import payment_gateway_pb2 as pb
from workers.codec import decode as validation
from workers.domain.pricing import Quote
from workers.domain.types import (
    BalanceQuery,
    Method,
    PaymentRecord,
    PaymentStatus,
    PaymentType,
    RefundRecord,
    RefundStatus,
    TransactionsPage,
    TransferRecord,
)
from workers.domain.webhooks import Endpoint
from workers.vault.cards import StoredCard

PROTO_METHODS: dict[Method, int] = {method: number for number, method in validation.METHODS_BY_PROTO.items()}
PROTO_REFUND_STATUSES: dict[RefundStatus, int] = {
    RefundStatus.PENDING: pb.REFUND_STATUS_PENDING,
    RefundStatus.UNKNOWN: pb.REFUND_STATUS_PENDING,  # never stored; a refund whose outcome is unknown is pending
    RefundStatus.SUCCEEDED: pb.REFUND_STATUS_SUCCEEDED,
    RefundStatus.FAILED: pb.REFUND_STATUS_FAILED,
}
PROTO_SCENES: dict[str, int] = {scene.value: number for number, scene in validation.SCENES_BY_PROTO.items()}
PROTO_STATUSES: dict[PaymentStatus, int] = {
    PaymentStatus.PENDING: pb.PAYMENT_STATUS_PENDING,
    PaymentStatus.SUCCEEDED: pb.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
    PaymentStatus.CLOSED: pb.PAYMENT_STATUS_CLOSED,
    PaymentStatus.PARTIALLY_REFUNDED: pb.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: pb.PAYMENT_STATUS_REFUNDED,
    PaymentStatus.IN_REVIEW: pb.PAYMENT_STATUS_IN_REVIEW,
}
PROTO_RISK_DECISIONS = {
    "allow": pb.RISK_DECISION_ALLOW,
    "review": pb.RISK_DECISION_REVIEW,
    "deny": pb.RISK_DECISION_DENY,
}
PROTO_TYPES: dict[PaymentType, int] = {
    PaymentType.TOP_UP: pb.PAYMENT_TYPE_TOP_UP,
    PaymentType.PURCHASE: pb.PAYMENT_TYPE_PURCHASE,
}


def payment(record: PaymentRecord) -> pb.Payment:
    return pb.Payment(
        payment_id=record.payment_id,
        order_id=record.order_id,
        user_id=record.user_id,
        amount_minor=record.amount_minor,
        currency=record.currency,
        method=PROTO_METHODS[record.method],  # type: ignore[arg-type]
        status=PROTO_STATUSES[record.status],  # type: ignore[arg-type]
        refunded_minor=record.refunded_minor,
        failure_reason=record.failure_reason,
        payee_id=record.payee_id,
        description=record.description,
        type=PROTO_TYPES[record.payment_type],  # type: ignore[arg-type]
        create_time=_timestamp(record.created_at),
        update_time=_timestamp(record.updated_at),
        entry_id=record.entry_id or "",
        list_price_minor=record.list_price_minor,
        discount_minor=record.discount_minor,
        tax_minor=record.tax_minor,
        creator_amount_minor=record.creator_amount_minor,
        platform_fee_minor=record.platform_fee_minor,
        pay_url=record.pay_url,
        qr_code=record.qr_code,
        prepay_id=record.prepay_id,
        channel_trade_no=record.channel_trade_no,
        attempt_id=record.attempt_id or "",
        scene=PROTO_SCENES.get(record.scene, pb.PAYMENT_SCENE_UNSPECIFIED),  # type: ignore[arg-type]
        card_masked=record.card_masked,
        risk=_risk(record),
    )


def card_token(card: StoredCard) -> pb.CardToken:
    return pb.CardToken(
        token=card.token, masked=card.masked, brand=card.brand, exp_month=card.exp_month, exp_year=card.exp_year
    )


def _risk(record: PaymentRecord) -> pb.RiskAssessment | None:
    """What the risk engine said about a payment it held for review; None (unset) for every other payment."""
    if not record.risk_decision:
        return None
    return pb.RiskAssessment(
        decision=PROTO_RISK_DECISIONS.get(record.risk_decision, pb.RISK_DECISION_UNSPECIFIED),
        score=record.risk_score,
        reasons=record.risk_reasons.split(",") if record.risk_reasons else [],
    )


def balance(query: BalanceQuery, available_minor: int) -> pb.Balance:
    return pb.Balance(user_id=query.user_id, currency=query.currency, available_minor=available_minor)


def refund(record: RefundRecord) -> pb.Refund:
    return pb.Refund(
        refund_id=record.refund_id,
        payment_id=record.payment_id,
        amount_minor=record.amount_minor,
        reason=record.reason,
        currency=record.currency,
        creator_amount_minor=record.creator_amount_minor,
        platform_fee_minor=record.platform_fee_minor,
        entry_id=record.entry_id,
        create_time=_timestamp(record.created_at),
        payment_status=PROTO_STATUSES[record.payment_status],  # type: ignore[arg-type]
        status=PROTO_REFUND_STATUSES[record.status],  # type: ignore[arg-type]
        channel_refund_no=record.channel_refund_no,
        failure_reason=record.failure_reason,
    )


def transfer(record: TransferRecord) -> pb.Transfer:
    return pb.Transfer(
        transfer_id=record.transfer_id,
        from_user_id=record.from_user_id,
        to_user_id=record.to_user_id,
        amount_minor=record.amount_minor,
        currency=record.currency,
        entry_id=record.entry_id,
        create_time=_timestamp(record.created_at),
    )


def transactions(page: TransactionsPage) -> pb.ListTransactionsResponse:
    return pb.ListTransactionsResponse(
        transactions=[
            pb.Transaction(
                entry_id=t.entry_id,
                amount_minor=t.amount_minor,
                currency=t.currency,
                kind=t.kind,
                reference_id=t.reference_id,
                create_time=_timestamp(t.created_at),
            )
            for t in page.transactions
        ],
        next_page_token=page.next_page_token,
    )


def quote(result: Quote) -> pb.PriceQuote:
    return pb.PriceQuote(
        amount_minor=result.amount_minor, discount_minor=result.discount_minor, tax_minor=result.tax_minor
    )


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def webhook_endpoint(endpoint: Endpoint, secret: str = "") -> pb.WebhookEndpoint:
    """An endpoint as its owner sees it; `secret` only right after it was made or rotated."""
    answer = pb.WebhookEndpoint(
        endpoint_id=endpoint.endpoint_id,
        url=endpoint.url,
        types=[pb.EventType.Value(name) for name in sorted(endpoint.types, key=pb.EventType.Value)],  # type: ignore[misc]
        create_time=_timestamp(endpoint.created_at),
        secret=secret,
        failing_attempts=endpoint.attempts,
        last_error=endpoint.last_error,
    )
    if endpoint.next_attempt_at is not None:
        answer.next_attempt_time.CopyFrom(_timestamp(endpoint.next_attempt_at))
    if endpoint.previous_expires_at is not None and endpoint.previous_secret_ciphertext is not None:
        answer.previous_secret_expire_time.CopyFrom(_timestamp(endpoint.previous_expires_at))
    return answer


def webhook_endpoints(endpoints: list[Endpoint]) -> pb.ListWebhookEndpointsResponse:
    return pb.ListWebhookEndpointsResponse(endpoints=[webhook_endpoint(e) for e in endpoints])
