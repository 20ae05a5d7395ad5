"""Property-based hostile input through the real gateway (docs/security.md, "What the suite runs").

For every method, hypothesis generates arbitrary values for every field of the request (and arbitrary bytes as
the whole body), mixed with plausible ones so that calls also reach the business rules; each call is signed
correctly and sent through `paygate serve`. For every call: the status is one a caller can be told
(docs/errors.md), never INTERNAL or UNKNOWN; a refusal is well formed (a reason, a bounded message without
internals, BadRequest for INVALID_ARGUMENT) and writes no row (row counts of every table before and after);
and the stack still serves a good call afterwards.

`make test` runs a short fuzz (FUZZ_EXAMPLES per method and kind); `make stress` runs the long one (over
20,000 examples across all methods). The terminal summary prints how many examples ran.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygate.scopes import METHOD_SCOPES, STREAMING_METHODS
from paygate.v1 import payment_gateway_pb2 as pb
from tests.security.conftest import DOCUMENTED_FOR_CALLER_INPUT, HostileClient, row_counts
from tests.support import Stack
from workers.domain.limits import MAX_AMOUNT_MINOR, MAX_PAGE_SIZE

METHODS = sorted(set(METHOD_SCOPES) - STREAMING_METHODS)  # StreamEvents: tests/e2e/test_events.py
FUZZ_EXAMPLES = 50
STRESS_FIELD_EXAMPLES = 2_300  # per method: 13 x (2,300 + 300) = at most 33,800 examples in the long run
STRESS_BYTES_EXAMPLES = 300
EXAMPLES_RUN: Counter[str] = Counter()
STATUSES_SEEN: Counter[str] = Counter()

IDENTIFIER_FIELDS = {
    "order_id",
    "user_id",
    "payee_id",
    "payment_id",
    "refund_id",
    "transfer_id",
    "from_user_id",
    "to_user_id",
    "endpoint_id",
    "device_id",
}
USERS = ["fz-learner-1", "fz-learner-2", "fz-creator"]
HUGE = "Z" * 100_000

hostile_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda s: s + "\n"),
    st.sampled_from(
        ["\x00", "\x9b[31m", "a\u202eb", "\ufffe", "\u2028", " ", "\t", "\uff10", "\u2460", "\u00b2", HUGE]
    ),
)
identifiers = st.one_of(
    st.sampled_from([*USERS, "fz-order-1", "pay_00000000000000000000000000", "fz-blocked-device"]),
    st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    hostile_text,
)
currencies = st.one_of(st.sampled_from(["CNY", "USD", "JPY", "BHD", "cny", "XAU", "CNY\n"]), hostile_text)
rates = st.one_of(
    st.sampled_from(["", "0", "0.1", "0.5", "1", "0.999999", "1.000001", "0.1234567", "1e-1", "-0.1"]),
    st.from_regex(r"[0-9.+eE -]{0,9}", fullmatch=True),
    hostile_text,
)
free_text = st.one_of(st.text(max_size=300), hostile_text)
# Card numbers (docs/security.md, "Card and personal data"): good, typed with separators, failing Luhn, too long,
# and anything that merely looks like digits; card tokens of the vault, of the processor, and card numbers in their
# place.
card_numbers = st.one_of(
    st.sampled_from(["4242424242424242", "4242 4242 4242 4242", "4000-0000-0000-0002", "4242424242424241", "4" * 20]),
    st.from_regex(r"[0-9 -]{0,25}", fullmatch=True),
    hostile_text,
)
card_tokens = st.one_of(
    st.sampled_from(["pgcard_" + "0" * 32, "tok_fuzz", "4242424242424242", "4242 4242 4242 4242"]), identifiers
)
int64 = st.one_of(
    st.integers(min_value=1, max_value=10_000),
    st.sampled_from([0, -1, MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR + 1, 2**63 - 1, -(2**63)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
int32 = st.one_of(
    st.integers(min_value=-2, max_value=MAX_PAGE_SIZE + 2), st.integers(min_value=-(2**31), max_value=2**31 - 1)
)
enums = st.one_of(st.integers(min_value=0, max_value=7), st.integers(min_value=-(2**31), max_value=2**31 - 1))


ip_addresses = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["192.0.2.7", "2001:db8::1", "10.0.0.1:443", "[::1]", "fe80::1%eth0", "01.2.3.4", "1.2.3"]),
)


def _string_strategy(name: str) -> st.SearchStrategy[str]:
    if name in IDENTIFIER_FIELDS:
        return identifiers
    if name == "currency":
        return currencies
    if name == "card_number":
        return card_numbers
    if name == "card_token":
        return card_tokens
    if name.endswith("_rate"):
        return rates
    if name == "url":
        # Webhook URLs: hostile text, or loopback URLs only (a valid one makes the relay connect there; tests
        # reach loopback and nothing else). Port 9 refuses, so such a delivery fails at once.
        loopback = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._-%?=", max_size=60)
        return st.one_of(hostile_text, loopback.map(lambda path: "http://127.0.0.1:9/" + path))
    if name == "ip_address":
        return st.one_of(ip_addresses, hostile_text)
    if name == "phone_number":
        return st.one_of(st.from_regex(r"\+[0-9]{0,17}", fullmatch=True), hostile_text)
    if name == "region":
        return st.one_of(st.sampled_from(["CN", "US", "JP", "cn", "XX", "", "CHN"]), hostile_text)
    if name == "page_token":
        return st.one_of(st.text(max_size=40), st.from_regex(r"[A-Za-z0-9_-]{32}", fullmatch=True), hostile_text)
    return free_text


def _field_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.is_repeated:  # e.g. the event types of a stream or an endpoint
        return st.lists(_scalar_strategy(field), max_size=5)
    return _scalar_strategy(field)


def _scalar_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string_strategy(field.name)
    if field.type == FieldDescriptor.TYPE_INT64:
        return int64
    if field.type == FieldDescriptor.TYPE_INT32:
        return int32
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enums
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return message_values(field.message_type)
    raise AssertionError(f"no strategy for {field.full_name}")


def message_values(descriptor: Descriptor) -> st.SearchStrategy[dict[str, Any]]:
    """Every field of the message: absent, or any value of the field's strategy."""
    return st.fixed_dictionaries(
        {},
        optional={field.name: _field_strategy(field) for field in descriptor.fields},
    )


# A valid request per method: the "near-valid" examples change one field of it (or none), so that most of them
# get past validation and exercise the business rules and the ledger, not only the grammar.
TEMPLATES: dict[str, dict[str, Any]] = {
    "TopUp": {"order_id": "fz-o", "user_id": USERS[0], "amount_minor": 100, "currency": "CNY", "method": 6},
    "CreatePayment": {
        "order_id": "fz-o",
        "user_id": USERS[0],
        "amount_minor": 50,
        "currency": "CNY",
        "method": 1,
        "payee_id": USERS[2],
        "description": "course",
    },
    "GetPayment": {"order_id": "fz-o"},
    "GetBalance": {"user_id": USERS[0], "currency": "CNY"},
    "RefundPayment": {"payment_id": "pay_00000000000000000000000000", "refund_id": "fz-r", "amount_minor": 1},
    "Transfer": {
        "transfer_id": "fz-x",
        "from_user_id": USERS[0],
        "to_user_id": USERS[1],
        "amount_minor": 10,
        "currency": "CNY",
    },
    "ListTransactions": {"user_id": USERS[0], "page_size": 3},
    "QuotePrice": {"list_price_minor": 1000, "discount_rate": "0.1", "tax_rate": "0.06", "currency": "CNY"},
    "CreateWebhookEndpoint": {"url": "http://127.0.0.1:9/fz"},
    "ListWebhookEndpoints": {},
    "DeleteWebhookEndpoint": {"endpoint_id": "we_00000000000000000000000000"},
    "RotateWebhookEndpointSecret": {"endpoint_id": "we_00000000000000000000000000", "overlap_hours": 1},
    "TokenizeCard": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2031},
}


@st.composite
def near_valid(draw: st.DrawFn, method: str, descriptor: Descriptor) -> dict[str, Any]:
    """The method's valid template with a fresh idempotency key, and at most one field replaced by any value."""
    values = dict(TEMPLATES[method])
    for key in ("order_id", "refund_id", "transfer_id"):
        if key in values and method != "GetPayment":
            values[key] = f"{values[key]}-{draw(st.integers(0, 10**9))}"
    fields = [field for field in descriptor.fields if field.type != FieldDescriptor.TYPE_MESSAGE]
    field = draw(st.none() | st.sampled_from(fields)) if fields else None
    if field is not None:
        values[field.name] = draw(_field_strategy(field))
    risk = descriptor.fields_by_name.get("risk")
    if risk is not None and draw(st.booleans()):  # the payer's side for the risk engine (docs/risk.md)
        values["risk"] = draw(_field_strategy(risk))
    return values


def _build(message_class: Any, values: dict[str, Any]) -> bytes:
    message = message_class()
    for name, value in values.items():
        if isinstance(value, list):
            getattr(message, name).extend(value)
        elif isinstance(value, dict):
            nested = getattr(message, name)
            nested.SetInParent()  # present even when every field of it is absent
            for nested_name, nested_value in value.items():
                setattr(nested, nested_name, nested_value)
        else:
            setattr(message, name, value)
    return bytes(message.SerializeToString())


def _request_class(method: str) -> Any:
    service = pb.DESCRIPTOR.services_by_name["PaymentGateway"]
    return getattr(pb, service.methods_by_name[method].input_type.name)


@pytest.fixture(scope="module")
def fuzzer(hostile_stack: Stack) -> HostileClient:
    key_id, secret = hostile_stack.create_key("fuzzer")
    client = HostileClient(hostile_stack, key_id, secret, hostile_stack.channel())
    for user in USERS[:2]:  # money to spend, so that purchases, transfers and refunds reach the ledger
        client.ok(
            "TopUp",
            pb.TopUpRequest(
                order_id=f"fz-fund-{uuid.uuid4().hex[:8]}",
                user_id=user,
                amount_minor=1_000_000,
                currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX,
            ),
        )
    return client


def check_one(client: HostileClient, method: str, body: bytes, kind: str) -> None:
    before = row_counts(client.stack)
    outcome = client.send(method, body)
    EXAMPLES_RUN[kind] += 1
    STATUSES_SEEN[outcome.code.name] += 1
    assert outcome.code in DOCUMENTED_FOR_CALLER_INPUT, (method, outcome.code, outcome.message)
    if outcome.code != grpc.StatusCode.OK:
        outcome.assert_refusal_is_well_formed()
        assert row_counts(client.stack) == before, f"a refused {method} ({outcome.code.name}) wrote rows"


def _fuzz_fields(client: HostileClient, method: str, examples: int, kind: str) -> None:
    message_class = _request_class(method)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(values=st.one_of(message_values(message_class.DESCRIPTOR), near_valid(method, message_class.DESCRIPTOR)))
    def run(values: dict[str, Any]) -> None:
        check_one(client, method, _build(message_class, values), kind)

    run()


def _fuzz_bytes(client: HostileClient, method: str, examples: int, kind: str) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=st.binary(max_size=400))
    def run(body: bytes) -> None:
        check_one(client, method, body, kind)

    run()


def _still_serves(client: HostileClient) -> None:
    balance = client.ok("GetBalance", pb.GetBalanceRequest(user_id="fz-after", currency="CNY"))
    assert isinstance(balance, pb.Balance) and balance.available_minor == 0


@pytest.mark.parametrize("method", METHODS)
def test_every_field_of_every_method_short(fuzzer: HostileClient, method: str) -> None:
    _fuzz_fields(fuzzer, method, FUZZ_EXAMPLES, "fields (short)")
    _fuzz_bytes(fuzzer, method, FUZZ_EXAMPLES // 2, "bytes (short)")
    _still_serves(fuzzer)


@pytest.mark.stress
@pytest.mark.parametrize("method", METHODS)
def test_every_field_of_every_method_long(fuzzer: HostileClient, method: str) -> None:
    _fuzz_fields(fuzzer, method, STRESS_FIELD_EXAMPLES, "fields (long)")
    _fuzz_bytes(fuzzer, method, STRESS_BYTES_EXAMPLES, "bytes (long)")
    _still_serves(fuzzer)
