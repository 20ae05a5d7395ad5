"""Asynchronous channel confirmation, expiry of PENDING payments, and late confirmations refunded automatically."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from runtime.db import Database
from runtime.errors import FailedPrecondition
from runtime.settings import Settings
from tests.support import Clock
from workers.domain.types import (
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    Method,
    PaymentLookup,
    PaymentStatus,
    RefundCommand,
    TopUpCommand,
)
from workers.service import PaymentService
from workers.wiring import build_service

CALLER = Caller(owner="expiry", key_id="key_e", request_id="req_e")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(database: Database, redis_url: str, redis_prefix: str, clock: Clock) -> Iterator[PaymentService]:
    settings = Settings(
        channel_sim_listen="", redis_url=redis_url, redis_prefix=redis_prefix, sandbox_confirmation="deferred"
    )
    built = build_service(settings, database, metrics=None, clock=clock)  # the one seam: time
    yield built
    built.close()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def balance(service: PaymentService, user: str) -> int:
    return service.get_balance(BalanceQuery(user, "CNY"))


def test_a_deferred_payment_is_pending_until_the_channel_confirms(service: PaymentService) -> None:
    user = uid("u")
    pending = service.top_up(CALLER, TopUpCommand(uid("t"), user, 700, "CNY", Method.SANDBOX))
    assert pending.status is PaymentStatus.PENDING and pending.entry_id is None
    assert balance(service, user) == 0
    with pytest.raises(FailedPrecondition, match="PENDING"):
        service.refund_payment(CALLER, RefundCommand(pending.payment_id, uid("r"), 1, ""))  # nothing to refund yet
    confirmed = service.confirm_payment(pending.payment_id)
    assert confirmed.status is PaymentStatus.SUCCEEDED and confirmed.entry_id
    assert balance(service, user) == 700
    assert service.confirm_payment(pending.payment_id) == confirmed  # a repeated notification changes nothing
    assert balance(service, user) == 700


def test_a_confirmed_channel_purchase_pays_creator_and_platform(service: PaymentService) -> None:
    payment = service.create_payment(
        CALLER, CreatePaymentCommand(uid("o"), uid("u"), 1_000, "CNY", Method.SANDBOX, uid("c"), "course")
    )
    assert payment.status is PaymentStatus.PENDING
    confirmed = service.confirm_payment(payment.payment_id)
    assert (confirmed.creator_amount_minor, confirmed.platform_fee_minor) == (800, 200)


def test_expired_pending_payments_are_closed_and_late_confirmations_refunded(
    service: PaymentService, clock: Clock
) -> None:
    user = uid("u")
    stale = service.top_up(CALLER, TopUpCommand(uid("t"), user, 500, "CNY", Method.SANDBOX))
    clock.now += timedelta(seconds=901)
    fresh = service.top_up(CALLER, TopUpCommand(uid("t"), user, 300, "CNY", Method.SANDBOX))
    assert service.close_expired(ttl_s=900) >= 1
    closed = service.get_payment(CALLER, PaymentLookup(stale.payment_id, ""))
    assert closed.status is PaymentStatus.CLOSED and "not confirmed" in closed.failure_reason
    assert service.get_payment(CALLER, PaymentLookup(fresh.payment_id, "")).status is PaymentStatus.PENDING

    late = service.confirm_payment(stale.payment_id)  # the channel charged the payer after all
    assert late.status is PaymentStatus.CLOSED
    assert late.refunded_minor == 500 and "refunded automatically" in late.failure_reason
    assert balance(service, user) == 0  # in and straight back out through the channel
    assert service.confirm_payment(stale.payment_id) == late  # once only
    service.confirm_payment(fresh.payment_id)
    assert balance(service, user) == 300


def test_only_one_sweeper_runs_at_a_time(service: PaymentService) -> None:
    held = service.locks.try_acquire("sweeper:expiry", lease_ms=10_000)
    assert held is not None
    assert service.sweep_once(ttl_s=1) == 0
    service.locks.release(held)


def test_a_pending_order_keeps_its_idempotency(service: PaymentService) -> None:
    command = TopUpCommand(uid("t"), uid("u"), 100, "CNY", Method.SANDBOX)
    first = service.top_up(CALLER, command)
    assert service.top_up(CALLER, command) == first
