from __future__ import annotations

import pytest

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.errors import InvalidArgument
from workers.codec import decode as validation
from workers.domain.currencies import minor_unit_exponent
from workers.domain.limits import MAX_AMOUNT_MINOR
from workers.domain.types import Method


def _fields(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def good_top_up(**changes: object) -> pb.TopUpRequest:
    values = {
        "order_id": "o-1",
        "user_id": "u-1",
        "amount_minor": 100,
        "currency": "CNY",
        "method": pb.PAYMENT_METHOD_SANDBOX,
    }
    values.update(changes)
    return pb.TopUpRequest(**values)  # type: ignore[arg-type]


def test_a_good_top_up_becomes_a_command() -> None:
    command = validation.top_up(good_top_up())
    assert (command.order_id, command.user_id, command.amount_minor, command.currency, command.method) == (
        "o-1",
        "u-1",
        100,
        "CNY",
        Method.SANDBOX,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"order_id": ""}, "order_id"),
        ({"order_id": "has space"}, "order_id"),
        ({"order_id": "x" * 65}, "order_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "ü"}, "user_id"),
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -1}, "amount_minor"),
        ({"amount_minor": MAX_AMOUNT_MINOR + 1}, "amount_minor"),
        ({"currency": ""}, "currency"),
        ({"currency": "cny"}, "currency"),
        ({"currency": "XAU"}, "currency"),
        ({"currency": "ABC"}, "currency"),
        ({"method": pb.PAYMENT_METHOD_UNSPECIFIED}, "method"),
        ({"method": 99}, "method"),
        ({"method": pb.PAYMENT_METHOD_WALLET}, "method"),
    ],
)
def test_each_bad_top_up_field_is_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.top_up(good_top_up(**changes))
    assert list(_fields(error)) == [field]


def test_every_violation_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.top_up(pb.TopUpRequest())
    assert set(_fields(error)) == {"order_id", "user_id", "amount_minor", "currency", "method"}


def test_wallet_is_refused_as_a_top_up_source_with_a_reason() -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.top_up(good_top_up(method=pb.PAYMENT_METHOD_WALLET))
    assert "not a top-up source" in _fields(error)["method"]


def test_amount_limit_is_inclusive() -> None:
    assert validation.top_up(good_top_up(amount_minor=MAX_AMOUNT_MINOR)).amount_minor == (MAX_AMOUNT_MINOR)


def test_create_payment_checks_payee_and_description() -> None:
    request = pb.CreatePaymentRequest(
        order_id="o",
        user_id="u",
        amount_minor=1,
        currency="JPY",
        method=pb.PAYMENT_METHOD_WALLET,
        payee_id="bad payee",
        description="x" * 257,
    )
    with pytest.raises(InvalidArgument) as error:
        validation.create_payment(request)
    assert set(_fields(error)) == {"payee_id", "description"}
    control = pb.CreatePaymentRequest(
        order_id="o",
        user_id="u",
        amount_minor=1,
        currency="JPY",
        method=pb.PAYMENT_METHOD_WALLET,
        description="line\nbreak",
    )
    with pytest.raises(InvalidArgument) as error:
        validation.create_payment(control)
    assert "control characters" in _fields(error)["description"]


def test_create_payment_payee_is_optional() -> None:
    request = pb.CreatePaymentRequest(
        order_id="o",
        user_id="u",
        amount_minor=1,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        description="Course: 数据结构",
    )
    command = validation.create_payment(request)
    assert command.payee_id == ""
    assert command.description == "Course: 数据结构"


@pytest.mark.parametrize(
    "request_",
    [pb.GetPaymentRequest(), pb.GetPaymentRequest(payment_id="p", order_id="o")],
)
def test_get_payment_needs_exactly_one_id(request_: pb.GetPaymentRequest) -> None:
    with pytest.raises(InvalidArgument, match="exactly one"):
        validation.get_payment(request_)


def test_get_payment_by_either_id() -> None:
    assert validation.get_payment(pb.GetPaymentRequest(payment_id="pay_1")).payment_id == "pay_1"
    assert validation.get_payment(pb.GetPaymentRequest(order_id="o-1")).order_id == "o-1"


def test_get_balance_validates_both_fields() -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.get_balance(pb.GetBalanceRequest(user_id="", currency="EURO"))
    assert set(_fields(error)) == {"user_id", "currency"}


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("CNY", 2), ("USD", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3), ("CLF", 4), ("KRW", 0), ("XAU", None), ("cny", None)],
)
def test_minor_unit_exponents(code: str, exponent: int | None) -> None:
    assert minor_unit_exponent(code) == exponent


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"method": pb.PAYMENT_METHOD_CARD}, "card_token", "required for CARD"),
        ({"method": pb.PAYMENT_METHOD_ALIPAY, "card_token": "tok_1"}, "card_token", "only for CARD"),
        ({"method": pb.PAYMENT_METHOD_CARD, "card_token": "tok 1"}, "card_token", ""),
        ({"method": pb.PAYMENT_METHOD_ALIPAY, "scene": pb.PAYMENT_SCENE_IN_APP}, "scene", "ALIPAY offers"),
        ({"method": pb.PAYMENT_METHOD_SANDBOX, "scene": pb.PAYMENT_SCENE_QR}, "scene", "offers the scenes: none"),
        ({"method": pb.PAYMENT_METHOD_WECHAT_PAY, "scene": 99}, "scene", ""),
        ({"method": pb.PAYMENT_METHOD_WECHAT_PAY, "scene": pb.PAYMENT_SCENE_IN_APP}, "payer_openid", "required"),
        ({"method": pb.PAYMENT_METHOD_WECHAT_PAY, "payer_openid": "o-1"}, "payer_openid", "only for WECHAT_PAY"),
        ({"method": pb.PAYMENT_METHOD_ALIPAY, "currency": "USD"}, "currency", "takes CNY only"),
        ({"method": pb.PAYMENT_METHOD_UNIONPAY, "currency": "JPY"}, "currency", "takes CNY only"),
    ],
)
def test_channel_inputs_are_checked_against_the_method(changes: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validation.top_up(good_top_up(**changes))
    assert words in _fields(refused)[field]


@pytest.mark.parametrize(
    ("changes", "scene", "token", "openid"),
    [
        ({"method": pb.PAYMENT_METHOD_ALIPAY}, "", "", ""),
        ({"method": pb.PAYMENT_METHOD_ALIPAY, "scene": pb.PAYMENT_SCENE_WAP}, "wap", "", ""),
        ({"method": pb.PAYMENT_METHOD_CARD, "card_token": "tok_abc", "currency": "USD"}, "", "tok_abc", ""),
        (
            {"method": pb.PAYMENT_METHOD_WECHAT_PAY, "scene": pb.PAYMENT_SCENE_IN_APP, "payer_openid": "oUpF8uMuAJO"},
            "in_app",
            "",
            "oUpF8uMuAJO",
        ),
    ],
)
def test_good_channel_inputs_reach_the_command(changes: dict[str, object], scene: str, token: str, openid: str) -> None:
    command = validation.top_up(good_top_up(**changes))
    assert (command.scene, command.card_token, command.payer_openid) == (scene, token, openid)
