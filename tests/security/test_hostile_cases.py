"""The hostile-input suite: each class of attack from docs/security.md and each refusal of docs/errors.md.

Every case asserts the status, the quality of the message (which rule; bounded; no internals) and that nothing
was written (row counts of every table before and after).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf.message import Message

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.security.conftest import HostileClient, Outcome, decode_outcome, row_counts
from tests.support import Stack
from workers.domain.limits import MAX_AMOUNT_MINOR, MAX_USER_BALANCE_MINOR

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextmanager
def writes_nothing(stack: Stack) -> Iterator[None]:
    before = row_counts(stack)
    yield
    assert row_counts(stack) == before, "a refused call wrote rows"


def refused(client: HostileClient, method: str, request: Message | bytes, code: grpc.StatusCode) -> Outcome:
    """Send a call that must be refused with `code`, writing nothing; return the outcome for more checks."""
    with writes_nothing(client.stack):
        outcome = client.send(method, request)
    assert outcome.code == code, (outcome.code, outcome.message)
    outcome.assert_refusal_is_well_formed()
    return outcome


def top_up(client: HostileClient, user: str, amount: int = 10_000, currency: str = "CNY") -> pb.Payment:
    request = pb.TopUpRequest(
        order_id=uid("t"), user_id=user, amount_minor=amount, currency=currency, method=pb.PAYMENT_METHOD_SANDBOX
    )
    payment = client.ok("TopUp", request)
    assert isinstance(payment, pb.Payment)
    return payment


def purchase(client: HostileClient, user: str, amount: int = 3_000, **extra: object) -> pb.Payment:
    request = pb.CreatePaymentRequest(
        order_id=uid("p"), user_id=user, amount_minor=amount, currency="CNY", method=pb.PAYMENT_METHOD_WALLET, **extra
    )  # type: ignore[arg-type]
    payment = client.ok("CreatePayment", request)
    assert isinstance(payment, pb.Payment)
    return payment


# -- 1. owner isolation: every RPC that takes an id, with a second owner's key -----------------------------------


@pytest.fixture(scope="module")
def a_payments(owner_a: HostileClient) -> dict[str, pb.Payment]:
    user = uid("iso")
    top = top_up(owner_a, user, 50_000)
    bought = purchase(owner_a, user, 3_000, payee_id=uid("creator"))
    return {"top_up": top, "purchase": bought}


def _same_refusal(foreign: Outcome, missing: Outcome) -> None:
    """Nothing in the answer tells another owner's resource from a missing one."""
    assert foreign.code == missing.code == grpc.StatusCode.NOT_FOUND
    assert foreign.message == missing.message
    assert foreign.raw_details == missing.raw_details


@pytest.mark.parametrize("kind", ["top_up", "purchase"])
def test_another_owner_cannot_refund(
    owner_b: HostileClient, a_payments: dict[str, pb.Payment], kind: str, owner_a: HostileClient
) -> None:
    target = a_payments[kind]
    for amount in (0, 1):
        foreign = refused(
            owner_b,
            "RefundPayment",
            pb.RefundPaymentRequest(payment_id=target.payment_id, refund_id=uid("r"), amount_minor=amount),
            grpc.StatusCode.NOT_FOUND,
        )
        missing = refused(
            owner_b,
            "RefundPayment",
            pb.RefundPaymentRequest(payment_id="pay_" + "0" * 26, refund_id=uid("r"), amount_minor=amount),
            grpc.StatusCode.NOT_FOUND,
        )
        _same_refusal(foreign, missing)
    still = owner_a.ok("GetPayment", pb.GetPaymentRequest(payment_id=target.payment_id))
    assert isinstance(still, pb.Payment) and still.refunded_minor == 0


@pytest.mark.parametrize("kind", ["top_up", "purchase"])
@pytest.mark.parametrize("by", ["payment_id", "order_id"])
def test_another_owner_cannot_read(
    owner_b: HostileClient, a_payments: dict[str, pb.Payment], kind: str, by: str
) -> None:
    target = a_payments[kind]
    foreign = refused(
        owner_b, "GetPayment", pb.GetPaymentRequest(**{by: getattr(target, by)}), grpc.StatusCode.NOT_FOUND
    )
    missing = refused(owner_b, "GetPayment", pb.GetPaymentRequest(**{by: "pay_" + "1" * 26}), grpc.StatusCode.NOT_FOUND)
    _same_refusal(foreign, missing)


def test_another_owner_reusing_an_order_id_gets_its_own_payment_not_a_replay(
    owner_b: HostileClient, a_payments: dict[str, pb.Payment]
) -> None:
    """Idempotency keys are per owner: B's call with A's order_id is B's own order and never returns A's answer."""
    mine = a_payments["top_up"]
    request = pb.TopUpRequest(
        order_id=mine.order_id,
        user_id=mine.user_id,
        amount_minor=mine.amount_minor,
        currency="CNY",
        method=pb.PAYMENT_METHOD_SANDBOX,
    )
    theirs = owner_b.ok("TopUp", request)
    assert isinstance(theirs, pb.Payment)
    assert theirs.payment_id != mine.payment_id and theirs.entry_id != mine.entry_id


def test_another_owner_sees_none_of_the_history_and_cannot_use_its_page_tokens(
    owner_a: HostileClient, owner_b: HostileClient
) -> None:
    user = uid("hist")
    for _ in range(3):
        top_up(owner_a, user, 100)
    page = owner_a.ok("ListTransactions", pb.ListTransactionsRequest(user_id=user, page_size=1))
    assert isinstance(page, pb.ListTransactionsResponse) and page.next_page_token
    theirs = owner_b.ok("ListTransactions", pb.ListTransactionsRequest(user_id=user))
    assert isinstance(theirs, pb.ListTransactionsResponse) and list(theirs.transactions) == []
    outcome = refused(
        owner_b,
        "ListTransactions",
        pb.ListTransactionsRequest(user_id=user, page_token=page.next_page_token),
        INVALID,
    )
    assert "pass next_page_token unchanged" in outcome.violations["page_token"]


# -- 2. one strict grammar: a trailing newline (or any other stray character) is never an identifier ------------

IDENTIFIER_CASES: list[tuple[str, Callable[[str], Message]]] = [
    ("TopUp", lambda v: pb.TopUpRequest(order_id=v, user_id="u-1", amount_minor=1, currency="CNY", method=6)),
    ("TopUp", lambda v: pb.TopUpRequest(order_id="o-1", user_id=v, amount_minor=1, currency="CNY", method=6)),
    (
        "CreatePayment",
        lambda v: pb.CreatePaymentRequest(order_id="o", user_id=v, amount_minor=1, currency="CNY", method=1),
    ),
    (
        "CreatePayment",
        lambda v: pb.CreatePaymentRequest(
            order_id="o", user_id="u", amount_minor=1, currency="CNY", method=1, payee_id=v
        ),
    ),
    ("GetPayment", lambda v: pb.GetPaymentRequest(payment_id=v)),
    ("GetPayment", lambda v: pb.GetPaymentRequest(order_id=v)),
    ("GetBalance", lambda v: pb.GetBalanceRequest(user_id=v, currency="CNY")),
    ("RefundPayment", lambda v: pb.RefundPaymentRequest(payment_id=v, refund_id="r-1")),
    ("RefundPayment", lambda v: pb.RefundPaymentRequest(payment_id="pay_1", refund_id=v)),
    (
        "Transfer",
        lambda v: pb.TransferRequest(transfer_id=v, from_user_id="a", to_user_id="b", amount_minor=1, currency="CNY"),
    ),
    (
        "Transfer",
        lambda v: pb.TransferRequest(transfer_id="x", from_user_id=v, to_user_id="b", amount_minor=1, currency="CNY"),
    ),
    (
        "Transfer",
        lambda v: pb.TransferRequest(transfer_id="x", from_user_id="a", to_user_id=v, amount_minor=1, currency="CNY"),
    ),
    ("ListTransactions", lambda v: pb.ListTransactionsRequest(user_id=v)),
]


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00", "\u00a0", "\u200b"])
@pytest.mark.parametrize(("method", "build"), IDENTIFIER_CASES)
def test_identifiers_with_a_stray_character_are_refused(
    owner_a: HostileClient, method: str, build: Callable[[str], Message], suffix: str
) -> None:
    request = build(f"learner-1{suffix}")
    outcome = refused(owner_a, method, request, INVALID)
    field = next(f.name for f, value in request.ListFields() if isinstance(value, str) and value.endswith(suffix))
    assert field in outcome.violations
    assert "A-Z a-z 0-9" in outcome.violations[field]


RISK_FIELD_CASES = [
    ("device_id", "dev-1", "A-Z a-z 0-9"),
    ("ip_address", "203.0.113.9", "IPv4 or IPv6"),
    ("phone_number", "+8613800138000", "E.164"),
    ("region", "CN", "ISO 3166-1"),
]


@pytest.mark.parametrize("suffix", ["\n", " ", "\x00", "\u00a0", "\u200b"])
@pytest.mark.parametrize(("field", "valid", "rule"), RISK_FIELD_CASES)
@pytest.mark.parametrize("method", ["CreatePayment", "TopUp"])
def test_risk_context_fields_with_a_stray_character_are_refused(
    owner_a: HostileClient, method: str, field: str, valid: str, rule: str, suffix: str
) -> None:
    """The payer's side for the risk engine (docs/risk.md) goes through the grammar like every field; a phone
    number is never echoed, not even in part."""
    risk = pb.RiskContext(**{field: valid + suffix})
    if method == "TopUp":
        request: Message = pb.TopUpRequest(
            order_id=uid("t"), user_id="u1", amount_minor=1, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX, risk=risk
        )
    else:
        request = pb.CreatePaymentRequest(
            order_id=uid("p"), user_id="u1", amount_minor=1, currency="CNY", method=pb.PAYMENT_METHOD_WALLET, risk=risk
        )
    outcome = refused(owner_a, method, request, INVALID)
    assert rule in outcome.violations[f"risk.{field}"]
    if field == "phone_number":
        assert "8613800138000" not in outcome.message


def test_a_blocklisted_device_is_denied_naming_the_rule_and_writes_nothing(owner_a: HostileClient) -> None:
    user = uid("risk")
    top_up(owner_a, user, 500)
    request = pb.CreatePaymentRequest(
        order_id=uid("p"),
        user_id=user,
        amount_minor=100,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        risk=pb.RiskContext(device_id="fz-blocked-device"),
    )
    outcome = refused(owner_a, "CreatePayment", request, grpc.StatusCode.FAILED_PRECONDITION)
    assert outcome.reason == "RISK_DENIED" and "fz-blocked" in outcome.message


def test_a_transfer_to_self_spelt_with_a_newline_is_refused(owner_a: HostileClient) -> None:
    user = uid("self")
    top_up(owner_a, user, 500)
    request = pb.TransferRequest(
        transfer_id=uid("x"), from_user_id=user, to_user_id=f"{user}\n", amount_minor=100, currency="CNY"
    )
    assert "to_user_id" in refused(owner_a, "Transfer", request, INVALID).violations
    balance = owner_a.ok("GetBalance", pb.GetBalanceRequest(user_id=user, currency="CNY"))
    assert isinstance(balance, pb.Balance) and balance.available_minor == 500


@pytest.mark.parametrize(
    "rate", ["0.1\n", " 0.1", "+0.1", "1e-1", "0.1234567", ".1", "1.", "00.1", "0.\u00b9", "\u0660.1"]
)
@pytest.mark.parametrize("field", ["discount_rate", "tax_rate"])
def test_rates_outside_the_strict_decimal_grammar_are_refused(owner_a: HostileClient, rate: str, field: str) -> None:
    outcome = refused(
        owner_a, "QuotePrice", pb.QuotePriceRequest(list_price_minor=1000, currency="CNY", **{field: rate}), INVALID
    )
    assert field in outcome.violations
    inputs = pb.PriceInputs(list_price_minor=1000, **{field: rate})
    request = pb.CreatePaymentRequest(order_id=uid("o"), user_id="u", currency="CNY", method=1, price=inputs)
    assert f"price.{field}" in refused(owner_a, "CreatePayment", request, INVALID).violations


# -- 3. ceilings: derived amounts, balances, and nothing overflows ---------------------------------------------


def test_a_priced_purchase_cannot_exceed_the_per_call_ceiling(owner_a: HostileClient) -> None:
    inputs = pb.PriceInputs(list_price_minor=MAX_AMOUNT_MINOR, tax_rate="1")
    request = pb.CreatePaymentRequest(
        order_id=uid("o"), user_id=uid("u"), currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX, price=inputs
    )
    outcome = refused(owner_a, "CreatePayment", request, INVALID)
    assert str(MAX_AMOUNT_MINOR) in " ".join(outcome.violations.values())


def test_a_full_wallet_refuses_more_and_every_read_and_verify_still_work(owner_a: HostileClient) -> None:
    user = uid("full")
    for _ in range(MAX_USER_BALANCE_MINOR // MAX_AMOUNT_MINOR):
        top_up(owner_a, user, MAX_AMOUNT_MINOR, currency="EUR")
    for amount in (1, MAX_AMOUNT_MINOR):
        request = pb.TopUpRequest(
            order_id=uid("t"), user_id=user, amount_minor=amount, currency="EUR", method=pb.PAYMENT_METHOD_SANDBOX
        )
        outcome = refused(owner_a, "TopUp", request, grpc.StatusCode.FAILED_PRECONDITION)
        assert outcome.reason == "BALANCE_LIMIT_EXCEEDED" and "ceiling" in outcome.message
    balance = owner_a.ok("GetBalance", pb.GetBalanceRequest(user_id=user, currency="EUR"))
    assert isinstance(balance, pb.Balance) and balance.available_minor == MAX_USER_BALANCE_MINOR
    history = owner_a.ok("ListTransactions", pb.ListTransactionsRequest(user_id=user, page_size=500))
    assert isinstance(history, pb.ListTransactionsResponse)
    assert sum(t.amount_minor for t in history.transactions) == MAX_USER_BALANCE_MINOR
    verified = owner_a.stack.cli("ledger", "verify")
    assert verified.returncode == 0 and "ledger verify: OK" in verified.stdout, verified.stdout + verified.stderr


# -- 4. page tokens are opaque and tamper-evident ---------------------------------------------------------------

HOSTILE_TOKENS = [
    base64.urlsafe_b64encode("v1:\u00b9\u00b2\u00b3".encode()).decode(),  # superscript digits in the old format
    base64.urlsafe_b64encode("v1:\u2460\u2461".encode()).decode(),  # circled digits
    base64.urlsafe_b64encode(b"v1:99999999999999999999999999").decode(),  # beyond int64
    base64.urlsafe_b64encode(b"v1:12").decode().rstrip("="),  # a well-formed token of the old, unsigned format
    "A" * 32,
    "\u2460" * 32,
    "A" * 31 + "\n",
    "x" * 100_000,
    "%00",
]


@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=range(len(HOSTILE_TOKENS)))
def test_forged_page_tokens_are_invalid_argument(owner_a: HostileClient, token: str) -> None:
    outcome = refused(owner_a, "ListTransactions", pb.ListTransactionsRequest(user_id="u-1", page_token=token), INVALID)
    assert "pass next_page_token unchanged" in outcome.violations["page_token"]


def test_a_token_used_for_another_user_is_refused(owner_a: HostileClient) -> None:
    user = uid("pg")
    for _ in range(2):
        top_up(owner_a, user, 10)
    page = owner_a.ok("ListTransactions", pb.ListTransactionsRequest(user_id=user, page_size=1))
    assert isinstance(page, pb.ListTransactionsResponse) and page.next_page_token
    request = pb.ListTransactionsRequest(user_id=uid("other"), page_token=page.next_page_token)
    refused(owner_a, "ListTransactions", request, INVALID)


# -- 7. error messages never echo unbounded input --------------------------------------------------------------

HUGE = "Q" * 100_000
ECHO_CASES: list[tuple[str, Message, str]] = [
    ("GetBalance", pb.GetBalanceRequest(user_id="u-1", currency=HUGE), "currency"),
    ("GetBalance", pb.GetBalanceRequest(user_id=HUGE, currency="CNY"), "user_id"),
    ("QuotePrice", pb.QuotePriceRequest(list_price_minor=1, currency="CNY", discount_rate=HUGE), "discount_rate"),
    ("QuotePrice", pb.QuotePriceRequest(list_price_minor=1, currency="CNY", tax_rate=HUGE), "tax_rate"),
    (
        "CreatePayment",
        pb.CreatePaymentRequest(order_id="o", user_id="u", amount_minor=1, currency="CNY", method=1, description=HUGE),
        "description",
    ),
    ("RefundPayment", pb.RefundPaymentRequest(payment_id="pay_1", refund_id="r", reason=HUGE), "reason"),
    ("ListTransactions", pb.ListTransactionsRequest(user_id="u", page_token=HUGE), "page_token"),
]


@pytest.mark.parametrize(("method", "request_", "field"), ECHO_CASES, ids=[f"{m}.{f}" for m, _, f in ECHO_CASES])
def test_huge_values_get_a_short_invalid_argument(
    owner_a: HostileClient, method: str, request_: Message, field: str
) -> None:
    outcome = refused(owner_a, method, request_, INVALID)
    assert field in outcome.violations
    assert len(outcome.message) < 1_000
    assert HUGE[:100] not in outcome.message


def test_every_field_huge_at_once_still_fits(owner_a: HostileClient) -> None:
    request = pb.CreatePaymentRequest(
        order_id=HUGE, user_id=HUGE, amount_minor=1, currency=HUGE, method=1, payee_id=HUGE, description=HUGE,
        price=pb.PriceInputs(list_price_minor=1, discount_rate=HUGE, tax_rate=HUGE),
    )  # fmt: skip
    outcome = refused(owner_a, "CreatePayment", request, INVALID)
    assert {"order_id", "user_id", "currency", "payee_id", "description", "price.discount_rate"} <= set(
        outcome.violations
    )


# -- 8. free text refuses control characters, surrogates and invalid UTF-8 --------------------------------------

BAD_TEXT = ["\x9b[2J", "\x1b[31m", "a\x00b", "line\nbreak", "\x7f", "\x85", "\u202eevil", "\u2066x", "\u2028", "\uffff"]


@pytest.mark.parametrize(
    "text", BAD_TEXT, ids=[f"U+{ord(next(c for c in t if not c.isalnum())):04X}" for t in BAD_TEXT]
)
def test_free_text_with_control_characters_is_refused(owner_a: HostileClient, text: str) -> None:
    payment = pb.CreatePaymentRequest(
        order_id=uid("o"),
        user_id="u",
        amount_minor=1,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        description=text,
    )
    assert "description" in refused(owner_a, "CreatePayment", payment, INVALID).violations
    refund = pb.RefundPaymentRequest(payment_id="pay_1", refund_id=uid("r"), reason=text)
    assert "reason" in refused(owner_a, "RefundPayment", refund, INVALID).violations


@pytest.mark.parametrize(
    "raw", [b"\xed\xa0\x80", b"\xff", b"\xc0\xaf", b"\xe2\x82"], ids=["surrogate", "ff", "overlong", "cut"]
)
def test_invalid_utf8_names_the_field(owner_a: HostileClient, raw: bytes) -> None:
    good = pb.CreatePaymentRequest(
        order_id="o-1", user_id="u-1", amount_minor=1, currency="CNY", method=1, description="MARK"
    ).SerializeToString()
    outcome = refused(owner_a, "CreatePayment", good.replace(b"MARK", (raw + b"MARK")[:4]), INVALID)
    assert list(outcome.violations) == ["description"]


def test_text_at_its_documented_limit_is_accepted_and_one_more_is_not(owner_a: HostileClient) -> None:
    user = uid("txt")
    top_up(owner_a, user, 100)
    assert purchase(owner_a, user, 1, description="数" * 256).description == "数" * 256
    request = pb.CreatePaymentRequest(
        order_id=uid("o"), user_id=user, amount_minor=1, currency="CNY", method=1, description="数" * 257
    )
    assert "at most 256" in refused(owner_a, "CreatePayment", request, INVALID).violations["description"]


# -- the refusals of docs/errors.md, each writing nothing ---------------------------------------------------------


def test_business_refusals_write_nothing(owner_a: HostileClient) -> None:
    user = uid("biz")
    top_up(owner_a, user, 1_000)
    paid = purchase(owner_a, user, 400)
    again = pb.CreatePaymentRequest(
        order_id=paid.order_id, user_id=user, amount_minor=401, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
    )
    assert refused(owner_a, "CreatePayment", again, grpc.StatusCode.ALREADY_EXISTS).reason == "IDEMPOTENCY_KEY_REUSED"
    broke = pb.CreatePaymentRequest(
        order_id=uid("o"), user_id=user, amount_minor=10_000, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
    )
    assert refused(owner_a, "CreatePayment", broke, grpc.StatusCode.FAILED_PRECONDITION).reason == "INSUFFICIENT_FUNDS"
    over = pb.RefundPaymentRequest(payment_id=paid.payment_id, refund_id=uid("r"), amount_minor=401)
    assert refused(owner_a, "RefundPayment", over, grpc.StatusCode.FAILED_PRECONDITION).reason == (
        "REFUND_EXCEEDS_PAYMENT"
    )
    channel = pb.TopUpRequest(
        order_id=uid("t"), user_id=user, amount_minor=1, currency="CNY", method=pb.PAYMENT_METHOD_ALIPAY
    )
    assert refused(owner_a, "TopUp", channel, grpc.StatusCode.UNIMPLEMENTED).reason == "UNIMPLEMENTED"
    missing = pb.RefundPaymentRequest(payment_id="pay_" + "2" * 26, refund_id=uid("r"))
    refused(owner_a, "RefundPayment", missing, grpc.StatusCode.NOT_FOUND)


def _raw(stack: Stack, method: str, body: bytes, metadata: list[tuple[str, str]]) -> Outcome:
    with stack.channel() as channel:
        try:
            answer = channel.unary_unary(method_path(method))(body, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return decode_outcome(method, None, error)
    return decode_outcome(method, answer, None)


def test_signature_refusals_write_nothing(owner_a: HostileClient, hostile_stack: Stack) -> None:
    body = pb.TopUpRequest(
        order_id=uid("t"), user_id="u", amount_minor=1, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    ).SerializeToString()
    path = method_path("TopUp")
    good = signing.signed_metadata(owner_a.key_id, owner_a.secret, path, body)
    cases = {
        "unsigned": [],
        "bad signature": [(k, "0" * 64 if k == signing.SIGNATURE_HEADER else v) for k, v in good],
        "unknown key": signing.signed_metadata("key_unknown", "sk_x", path, body),
        "stale timestamp": signing.signed_metadata(owner_a.key_id, owner_a.secret, path, body, timestamp=1),
        # (a newline in metadata never leaves the client library: gRPC refuses it locally)
        "key id outside its grammar": [(k, v + "/x" if k == signing.KEY_ID_HEADER else v) for k, v in good],
        "short nonce": [(k, "n" * 15 if k == signing.NONCE_HEADER else v) for k, v in good],
    }
    for name, metadata in cases.items():
        with writes_nothing(hostile_stack):
            outcome = _raw(hostile_stack, "TopUp", body, metadata)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (name, outcome.code, outcome.message)
        assert outcome.message and len(outcome.message) < 1_000 and "0" * 64 not in outcome.message
    read_only_key, read_only_secret = hostile_stack.create_key("read-only", scopes="balances:read")
    with writes_nothing(hostile_stack):
        denied = _raw(
            hostile_stack, "TopUp", body, signing.signed_metadata(read_only_key, read_only_secret, path, body)
        )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
