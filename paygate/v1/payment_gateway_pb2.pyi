import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_METHOD_UNSPECIFIED: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_WALLET: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_ALIPAY: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_WECHAT_PAY: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_UNIONPAY: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_CARD: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_SANDBOX: _ClassVar[PaymentMethod]

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PENDING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_SUCCEEDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_FAILED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CLOSED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PARTIALLY_REFUNDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_IN_REVIEW: _ClassVar[PaymentStatus]

class PaymentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_TYPE_UNSPECIFIED: _ClassVar[PaymentType]
    PAYMENT_TYPE_TOP_UP: _ClassVar[PaymentType]
    PAYMENT_TYPE_PURCHASE: _ClassVar[PaymentType]

class PaymentScene(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_SCENE_UNSPECIFIED: _ClassVar[PaymentScene]
    PAYMENT_SCENE_QR: _ClassVar[PaymentScene]
    PAYMENT_SCENE_PAGE: _ClassVar[PaymentScene]
    PAYMENT_SCENE_WAP: _ClassVar[PaymentScene]
    PAYMENT_SCENE_IN_APP: _ClassVar[PaymentScene]

class RefundStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_STATUS_UNSPECIFIED: _ClassVar[RefundStatus]
    REFUND_STATUS_PENDING: _ClassVar[RefundStatus]
    REFUND_STATUS_SUCCEEDED: _ClassVar[RefundStatus]
    REFUND_STATUS_FAILED: _ClassVar[RefundStatus]

class RiskDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_DECISION_UNSPECIFIED: _ClassVar[RiskDecision]
    RISK_DECISION_ALLOW: _ClassVar[RiskDecision]
    RISK_DECISION_REVIEW: _ClassVar[RiskDecision]
    RISK_DECISION_DENY: _ClassVar[RiskDecision]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_CREATED: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_SUCCEEDED: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_FAILED: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_CLOSED: _ClassVar[EventType]
    EVENT_TYPE_REFUND_CREATED: _ClassVar[EventType]
    EVENT_TYPE_REFUND_SUCCEEDED: _ClassVar[EventType]
    EVENT_TYPE_REFUND_FAILED: _ClassVar[EventType]
    EVENT_TYPE_TRANSFER_SUCCEEDED: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_LATE_REFUNDED: _ClassVar[EventType]
    EVENT_TYPE_RECONCILIATION_MISMATCH: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_IN_REVIEW: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_RELEASED: _ClassVar[EventType]
PAYMENT_METHOD_UNSPECIFIED: PaymentMethod
PAYMENT_METHOD_WALLET: PaymentMethod
PAYMENT_METHOD_ALIPAY: PaymentMethod
PAYMENT_METHOD_WECHAT_PAY: PaymentMethod
PAYMENT_METHOD_UNIONPAY: PaymentMethod
PAYMENT_METHOD_CARD: PaymentMethod
PAYMENT_METHOD_SANDBOX: PaymentMethod
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_PENDING: PaymentStatus
PAYMENT_STATUS_SUCCEEDED: PaymentStatus
PAYMENT_STATUS_FAILED: PaymentStatus
PAYMENT_STATUS_CLOSED: PaymentStatus
PAYMENT_STATUS_PARTIALLY_REFUNDED: PaymentStatus
PAYMENT_STATUS_REFUNDED: PaymentStatus
PAYMENT_STATUS_IN_REVIEW: PaymentStatus
PAYMENT_TYPE_UNSPECIFIED: PaymentType
PAYMENT_TYPE_TOP_UP: PaymentType
PAYMENT_TYPE_PURCHASE: PaymentType
PAYMENT_SCENE_UNSPECIFIED: PaymentScene
PAYMENT_SCENE_QR: PaymentScene
PAYMENT_SCENE_PAGE: PaymentScene
PAYMENT_SCENE_WAP: PaymentScene
PAYMENT_SCENE_IN_APP: PaymentScene
REFUND_STATUS_UNSPECIFIED: RefundStatus
REFUND_STATUS_PENDING: RefundStatus
REFUND_STATUS_SUCCEEDED: RefundStatus
REFUND_STATUS_FAILED: RefundStatus
RISK_DECISION_UNSPECIFIED: RiskDecision
RISK_DECISION_ALLOW: RiskDecision
RISK_DECISION_REVIEW: RiskDecision
RISK_DECISION_DENY: RiskDecision
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_PAYMENT_CREATED: EventType
EVENT_TYPE_PAYMENT_SUCCEEDED: EventType
EVENT_TYPE_PAYMENT_FAILED: EventType
EVENT_TYPE_PAYMENT_CLOSED: EventType
EVENT_TYPE_REFUND_CREATED: EventType
EVENT_TYPE_REFUND_SUCCEEDED: EventType
EVENT_TYPE_REFUND_FAILED: EventType
EVENT_TYPE_TRANSFER_SUCCEEDED: EventType
EVENT_TYPE_PAYMENT_LATE_REFUNDED: EventType
EVENT_TYPE_RECONCILIATION_MISMATCH: EventType
EVENT_TYPE_PAYMENT_IN_REVIEW: EventType
EVENT_TYPE_PAYMENT_RELEASED: EventType

class TopUpRequest(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_minor", "currency", "method", "scene", "card_token", "payer_openid", "risk")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCENE_FIELD_NUMBER: _ClassVar[int]
    CARD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAYER_OPENID_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    method: PaymentMethod
    scene: PaymentScene
    card_token: str
    payer_openid: str
    risk: RiskContext
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., method: _Optional[_Union[PaymentMethod, str]] = ..., scene: _Optional[_Union[PaymentScene, str]] = ..., card_token: _Optional[str] = ..., payer_openid: _Optional[str] = ..., risk: _Optional[_Union[RiskContext, _Mapping]] = ...) -> None: ...

class CreatePaymentRequest(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_minor", "currency", "method", "payee_id", "description", "price", "scene", "card_token", "payer_openid", "risk")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYEE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SCENE_FIELD_NUMBER: _ClassVar[int]
    CARD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAYER_OPENID_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    method: PaymentMethod
    payee_id: str
    description: str
    price: PriceInputs
    scene: PaymentScene
    card_token: str
    payer_openid: str
    risk: RiskContext
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., method: _Optional[_Union[PaymentMethod, str]] = ..., payee_id: _Optional[str] = ..., description: _Optional[str] = ..., price: _Optional[_Union[PriceInputs, _Mapping]] = ..., scene: _Optional[_Union[PaymentScene, str]] = ..., card_token: _Optional[str] = ..., payer_openid: _Optional[str] = ..., risk: _Optional[_Union[RiskContext, _Mapping]] = ...) -> None: ...

class RiskContext(_message.Message):
    __slots__ = ("device_id", "ip_address", "phone_number", "region")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    ip_address: str
    phone_number: str
    region: str
    def __init__(self, device_id: _Optional[str] = ..., ip_address: _Optional[str] = ..., phone_number: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class RiskAssessment(_message.Message):
    __slots__ = ("decision", "score", "reasons")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    decision: RiskDecision
    score: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision: _Optional[_Union[RiskDecision, str]] = ..., score: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class PriceInputs(_message.Message):
    __slots__ = ("list_price_minor", "discount_rate", "tax_rate")
    LIST_PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_RATE_FIELD_NUMBER: _ClassVar[int]
    TAX_RATE_FIELD_NUMBER: _ClassVar[int]
    list_price_minor: int
    discount_rate: str
    tax_rate: str
    def __init__(self, list_price_minor: _Optional[int] = ..., discount_rate: _Optional[str] = ..., tax_rate: _Optional[str] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "order_id")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    order_id: str
    def __init__(self, payment_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_id", "order_id", "user_id", "amount_minor", "currency", "method", "status", "refunded_minor", "failure_reason", "payee_id", "description", "type", "create_time", "update_time", "entry_id", "list_price_minor", "discount_minor", "tax_minor", "creator_amount_minor", "platform_fee_minor", "pay_url", "qr_code", "prepay_id", "channel_trade_no", "attempt_id", "scene", "card_masked", "risk")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    PAYEE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    LIST_PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    TAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREATOR_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    PAY_URL_FIELD_NUMBER: _ClassVar[int]
    QR_CODE_FIELD_NUMBER: _ClassVar[int]
    PREPAY_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SCENE_FIELD_NUMBER: _ClassVar[int]
    CARD_MASKED_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    method: PaymentMethod
    status: PaymentStatus
    refunded_minor: int
    failure_reason: str
    payee_id: str
    description: str
    type: PaymentType
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    entry_id: str
    list_price_minor: int
    discount_minor: int
    tax_minor: int
    creator_amount_minor: int
    platform_fee_minor: int
    pay_url: str
    qr_code: str
    prepay_id: str
    channel_trade_no: str
    attempt_id: str
    scene: PaymentScene
    card_masked: str
    risk: RiskAssessment
    def __init__(self, payment_id: _Optional[str] = ..., order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., method: _Optional[_Union[PaymentMethod, str]] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., refunded_minor: _Optional[int] = ..., failure_reason: _Optional[str] = ..., payee_id: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[_Union[PaymentType, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entry_id: _Optional[str] = ..., list_price_minor: _Optional[int] = ..., discount_minor: _Optional[int] = ..., tax_minor: _Optional[int] = ..., creator_amount_minor: _Optional[int] = ..., platform_fee_minor: _Optional[int] = ..., pay_url: _Optional[str] = ..., qr_code: _Optional[str] = ..., prepay_id: _Optional[str] = ..., channel_trade_no: _Optional[str] = ..., attempt_id: _Optional[str] = ..., scene: _Optional[_Union[PaymentScene, str]] = ..., card_masked: _Optional[str] = ..., risk: _Optional[_Union[RiskAssessment, _Mapping]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("user_id", "currency")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    currency: str
    def __init__(self, user_id: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("user_id", "currency", "available_minor")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    currency: str
    available_minor: int
    def __init__(self, user_id: _Optional[str] = ..., currency: _Optional[str] = ..., available_minor: _Optional[int] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "refund_id", "amount_minor", "reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    refund_id: str
    amount_minor: int
    reason: str
    def __init__(self, payment_id: _Optional[str] = ..., refund_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("transfer_id", "from_user_id", "to_user_id", "amount_minor", "currency")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_ID_FIELD_NUMBER: _ClassVar[int]
    TO_USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    from_user_id: str
    to_user_id: str
    amount_minor: int
    currency: str
    def __init__(self, transfer_id: _Optional[str] = ..., from_user_id: _Optional[str] = ..., to_user_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Refund(_message.Message):
    __slots__ = ("refund_id", "payment_id", "amount_minor", "reason", "currency", "creator_amount_minor", "platform_fee_minor", "entry_id", "create_time", "payment_status", "status", "channel_refund_no", "failure_reason")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATOR_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_REFUND_NO_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    payment_id: str
    amount_minor: int
    reason: str
    currency: str
    creator_amount_minor: int
    platform_fee_minor: int
    entry_id: str
    create_time: _timestamp_pb2.Timestamp
    payment_status: PaymentStatus
    status: RefundStatus
    channel_refund_no: str
    failure_reason: str
    def __init__(self, refund_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., reason: _Optional[str] = ..., currency: _Optional[str] = ..., creator_amount_minor: _Optional[int] = ..., platform_fee_minor: _Optional[int] = ..., entry_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payment_status: _Optional[_Union[PaymentStatus, str]] = ..., status: _Optional[_Union[RefundStatus, str]] = ..., channel_refund_no: _Optional[str] = ..., failure_reason: _Optional[str] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("transfer_id", "from_user_id", "to_user_id", "amount_minor", "currency", "entry_id", "create_time")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_ID_FIELD_NUMBER: _ClassVar[int]
    TO_USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    from_user_id: str
    to_user_id: str
    amount_minor: int
    currency: str
    entry_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[str] = ..., from_user_id: _Optional[str] = ..., to_user_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., entry_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTransactionsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransactionsResponse(_message.Message):
    __slots__ = ("transactions", "next_page_token")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    next_page_token: str
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("entry_id", "amount_minor", "currency", "kind", "reference_id", "create_time")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    amount_minor: int
    currency: str
    kind: str
    reference_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, entry_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., kind: _Optional[str] = ..., reference_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QuotePriceRequest(_message.Message):
    __slots__ = ("list_price_minor", "discount_rate", "tax_rate", "currency")
    LIST_PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_RATE_FIELD_NUMBER: _ClassVar[int]
    TAX_RATE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    list_price_minor: int
    discount_rate: str
    tax_rate: str
    currency: str
    def __init__(self, list_price_minor: _Optional[int] = ..., discount_rate: _Optional[str] = ..., tax_rate: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class PriceQuote(_message.Message):
    __slots__ = ("amount_minor", "discount_minor", "tax_minor")
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    TAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    amount_minor: int
    discount_minor: int
    tax_minor: int
    def __init__(self, amount_minor: _Optional[int] = ..., discount_minor: _Optional[int] = ..., tax_minor: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "type", "create_time", "payment", "refund", "transfer", "mismatch")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: EventType
    create_time: _timestamp_pb2.Timestamp
    payment: Payment
    refund: Refund
    transfer: Transfer
    mismatch: ReconciliationMismatch
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payment: _Optional[_Union[Payment, _Mapping]] = ..., refund: _Optional[_Union[Refund, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., mismatch: _Optional[_Union[ReconciliationMismatch, _Mapping]] = ...) -> None: ...

class ReconciliationMismatch(_message.Message):
    __slots__ = ("item_id", "run_id", "channel", "day", "kind", "payment_id", "refund_id", "local_amount_minor", "provider_amount_minor", "currency", "detail")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    run_id: str
    channel: str
    day: str
    kind: str
    payment_id: str
    refund_id: str
    local_amount_minor: int
    provider_amount_minor: int
    currency: str
    detail: str
    def __init__(self, item_id: _Optional[str] = ..., run_id: _Optional[str] = ..., channel: _Optional[str] = ..., day: _Optional[str] = ..., kind: _Optional[str] = ..., payment_id: _Optional[str] = ..., refund_id: _Optional[str] = ..., local_amount_minor: _Optional[int] = ..., provider_amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_cursor", "types")
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    after_cursor: str
    types: _containers.RepeatedScalarFieldContainer[EventType]
    def __init__(self, after_cursor: _Optional[str] = ..., types: _Optional[_Iterable[_Union[EventType, str]]] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("event", "heartbeat")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    heartbeat: Heartbeat
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time",)
    TIME_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateWebhookEndpointRequest(_message.Message):
    __slots__ = ("url", "types")
    URL_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    url: str
    types: _containers.RepeatedScalarFieldContainer[EventType]
    def __init__(self, url: _Optional[str] = ..., types: _Optional[_Iterable[_Union[EventType, str]]] = ...) -> None: ...

class WebhookEndpoint(_message.Message):
    __slots__ = ("endpoint_id", "url", "types", "create_time", "secret", "failing_attempts", "next_attempt_time", "last_error", "previous_secret_expire_time")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    FAILING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    url: str
    types: _containers.RepeatedScalarFieldContainer[EventType]
    create_time: _timestamp_pb2.Timestamp
    secret: str
    failing_attempts: int
    next_attempt_time: _timestamp_pb2.Timestamp
    last_error: str
    previous_secret_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, endpoint_id: _Optional[str] = ..., url: _Optional[str] = ..., types: _Optional[_Iterable[_Union[EventType, str]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., secret: _Optional[str] = ..., failing_attempts: _Optional[int] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., previous_secret_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWebhookEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWebhookEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[WebhookEndpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[WebhookEndpoint, _Mapping]]] = ...) -> None: ...

class DeleteWebhookEndpointRequest(_message.Message):
    __slots__ = ("endpoint_id",)
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    def __init__(self, endpoint_id: _Optional[str] = ...) -> None: ...

class RotateWebhookEndpointSecretRequest(_message.Message):
    __slots__ = ("endpoint_id", "overlap_hours")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_HOURS_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    overlap_hours: int
    def __init__(self, endpoint_id: _Optional[str] = ..., overlap_hours: _Optional[int] = ...) -> None: ...

class TokenizeCardRequest(_message.Message):
    __slots__ = ("card_number", "exp_month", "exp_year")
    CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXP_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXP_YEAR_FIELD_NUMBER: _ClassVar[int]
    card_number: str
    exp_month: int
    exp_year: int
    def __init__(self, card_number: _Optional[str] = ..., exp_month: _Optional[int] = ..., exp_year: _Optional[int] = ...) -> None: ...

class CardToken(_message.Message):
    __slots__ = ("token", "masked", "brand", "exp_month", "exp_year")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    EXP_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXP_YEAR_FIELD_NUMBER: _ClassVar[int]
    token: str
    masked: str
    brand: str
    exp_month: int
    exp_year: int
    def __init__(self, token: _Optional[str] = ..., masked: _Optional[str] = ..., brand: _Optional[str] = ..., exp_month: _Optional[int] = ..., exp_year: _Optional[int] = ...) -> None: ...
