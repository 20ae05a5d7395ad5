"""A property-based stateful test (hypothesis) through the real gRPC path, checked against a small reference model.

Hypothesis drives random top-ups, wallet purchases, refunds, transfers and exact retries; after every step each
wallet's balance and every answer must match what the model predicts: the same code for each call (OK or
FAILED_PRECONDITION), the same amounts, and the original result for a retried id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack

CURRENCY = "CNY"
USERS = 4
amounts = st.integers(min_value=1, max_value=5_000)


@dataclass
class ModelPayment:
    payment_id: str
    user: str
    amount: int
    refunded: int = 0


def refused(action) -> grpc.StatusCode | None:  # type: ignore[no-untyped-def]
    try:
        action()
    except grpc.RpcError as error:
        return error.code()
    return None


class LedgerModel(RuleBasedStateMachine):
    client: PaygateClient  # set by the test before the machine runs

    payments = Bundle("payments")

    @initialize()
    def start(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.users = [f"m{run}-{n}" for n in range(USERS)]
        self.wallets = dict.fromkeys(self.users, 0)
        self.known: dict[str, ModelPayment] = {}
        self.last: tuple | None = None  # type: ignore[type-arg]
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.users[0]}-{self.counter}"

    @rule(user=st.integers(0, USERS - 1), amount=amounts)
    def top_up(self, user: int, amount: int) -> None:
        name = self.users[user]
        request = pb.TopUpRequest(
            order_id=self._id("t"),
            user_id=name,
            amount_minor=amount,
            currency=CURRENCY,
            method=pb.PAYMENT_METHOD_SANDBOX,
        )
        payment = self.client.top_up(request)
        assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED and payment.amount_minor == amount
        self.wallets[name] += amount
        self.last = ("top_up", request, payment)

    @rule(target=payments, user=st.integers(0, USERS - 1), amount=amounts, creator=st.sampled_from(["", "c1", "c2"]))
    def purchase(self, user: int, amount: int, creator: str):  # type: ignore[no-untyped-def]
        name = self.users[user]
        request = pb.CreatePaymentRequest(
            order_id=self._id("o"),
            user_id=name,
            amount_minor=amount,
            currency=CURRENCY,
            method=pb.PAYMENT_METHOD_WALLET,
            payee_id=creator,
        )
        if self.wallets[name] < amount:
            assert refused(lambda: self.client.create_payment(request)) == grpc.StatusCode.FAILED_PRECONDITION
            return None
        payment = self.client.create_payment(request)
        assert payment.creator_amount_minor + payment.platform_fee_minor == amount
        self.wallets[name] -= amount
        self.known[payment.payment_id] = ModelPayment(payment.payment_id, name, amount)
        self.last = ("purchase", request, payment)
        return payment.payment_id

    @rule(payment_id=payments, fraction=st.floats(min_value=0.0, max_value=1.5))
    def refund(self, payment_id: str | None, fraction: float) -> None:
        if payment_id is None:
            return
        model = self.known[payment_id]
        amount = max(1, int(model.amount * fraction))
        request = pb.RefundPaymentRequest(payment_id=payment_id, refund_id=self._id("r"), amount_minor=amount)
        if model.refunded + amount > model.amount:
            assert refused(lambda: self.client.refund_payment(request)) == grpc.StatusCode.FAILED_PRECONDITION
            return
        refund = self.client.refund_payment(request)
        model.refunded += amount
        expected = (
            pb.PAYMENT_STATUS_REFUNDED if model.refunded == model.amount else pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
        )
        assert refund.amount_minor == amount and refund.payment_status == expected
        self.wallets[model.user] += amount
        self.last = ("refund", request, refund)

    @rule(source=st.integers(0, USERS - 1), recipient=st.integers(0, USERS - 1), amount=amounts)
    def transfer(self, source: int, recipient: int, amount: int) -> None:
        if source == recipient:
            return
        request = pb.TransferRequest(
            transfer_id=self._id("x"),
            from_user_id=self.users[source],
            to_user_id=self.users[recipient],
            amount_minor=amount,
            currency=CURRENCY,
        )
        if self.wallets[self.users[source]] < amount:
            assert refused(lambda: self.client.transfer(request)) == grpc.StatusCode.FAILED_PRECONDITION
            return
        result = self.client.transfer(request)
        assert result.amount_minor == amount
        self.wallets[self.users[source]] -= amount
        self.wallets[self.users[recipient]] += amount
        self.last = ("transfer", request, result)

    @rule()
    def retry_the_last_call(self) -> None:
        """The same id and request again: the original answer, and no money moves."""
        if self.last is None:
            return
        kind, request, original = self.last
        call = {
            "top_up": self.client.top_up,
            "purchase": self.client.create_payment,
            "refund": self.client.refund_payment,
            "transfer": self.client.transfer,
        }[kind]
        assert call(request) == original

    @invariant()
    def balances_match_the_model(self) -> None:
        if not hasattr(self, "wallets"):
            return
        for name, expected in self.wallets.items():
            balance = self.client.get_balance(pb.GetBalanceRequest(user_id=name, currency=CURRENCY))
            assert balance.available_minor == expected, f"{name}: ledger {balance.available_minor}, model {expected}"


def run_model(client: PaygateClient, examples: int, steps: int) -> None:
    LedgerModel.client = client
    machine = LedgerModel.TestCase
    machine.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    machine().runTest()


def test_the_ledger_matches_a_reference_model(stack: Stack, client: PaygateClient) -> None:
    run_model(client, examples=12, steps=25)


@pytest.mark.stress
def test_stress_the_ledger_matches_a_reference_model(stack: Stack, client: PaygateClient) -> None:
    run_model(client, examples=100, steps=60)
