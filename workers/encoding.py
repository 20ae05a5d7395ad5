"""Domain records → protobuf responses (the 'encode' step of decode → service → encode)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from paygate.v1 import payment_gateway_pb2 as pb
from workers.domain import BalanceQuery, Method, PaymentRecord, PaymentStatus, PaymentType
from workers.validation import METHODS_BY_PROTO

PROTO_METHODS: dict[Method, int] = {method: number for number, method in METHODS_BY_PROTO.items()}
PROTO_STATUSES: dict[PaymentStatus, int] = {
    PaymentStatus.PENDING: pb.PAYMENT_STATUS_PENDING,
    PaymentStatus.SUCCEEDED: pb.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
    PaymentStatus.CLOSED: pb.PAYMENT_STATUS_CLOSED,
    PaymentStatus.PARTIALLY_REFUNDED: pb.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: pb.PAYMENT_STATUS_REFUNDED,
}
PROTO_TYPES: dict[PaymentType, int] = {
    PaymentType.TOP_UP: pb.PAYMENT_TYPE_TOP_UP,
    PaymentType.PURCHASE: pb.PAYMENT_TYPE_PURCHASE,
}


def payment(record: PaymentRecord) -> pb.Payment:
    create_time = Timestamp()
    create_time.FromDatetime(record.created_at)
    update_time = Timestamp()
    update_time.FromDatetime(record.updated_at)
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
        create_time=create_time,
        update_time=update_time,
        entry_id=record.entry_id or "",
    )


def balance(query: BalanceQuery, available_minor: int) -> pb.Balance:
    return pb.Balance(user_id=query.user_id, currency=query.currency, available_minor=available_minor)
