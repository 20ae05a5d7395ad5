"""The workloads of `paygate bench`: what each call sends, and the set-up each needs before the timed window.

Every scenario is a `Plan` (picklable: key, ids made in set-up) whose `requests()` builds the i-th call of a load
process. Idempotency keys carry the plan's tag, the phase (floor, closed, open) and the process, so no two calls
of a bench run share one. Set-up goes through the real API with the synchronous client: learners' wallets are
filled by SANDBOX top-ups and the purchases a refund takes back are real purchases, all before any clock runs.

| scenario | each call |
|---|---|
| wallet_purchase | CreatePayment WALLET, 1.00 CNY, a funded learner paying one of many creators |
| hot_creator | the same, every purchase paying one creator |
| balance_read | GetBalance of a funded learner |
| top_up | TopUp SANDBOX into a learner's wallet |
| transfer | Transfer of 0.01 CNY from one funded learner to another |
| refund | RefundPayment of 1.00 CNY (partial) of a purchase made in set-up, each paying its own creator |
| channel_purchase | CreatePayment ALIPAY, scene QR, through the channel simulator (answers PENDING with a QR code) |
| mixed | a course platform: in every 20 calls 10 balance reads, 6 purchases, 2 top-ups, 1 refund, 1 list |
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from paygate.client import PaygateClient
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb

T = TypeVar("T")
R = TypeVar("R")
CURRENCY = "CNY"
LEARNER_FUNDS_MINOR = 10**12
PURCHASE_MINOR = 100
SETUP_PURCHASE_MINOR = 10**7  # refunds take PURCHASE_MINOR at a time: 100,000 refunds before one is used up
SETUP_THREADS = 16
CREATORS = 1_000

TOP_UP = method_path("TopUp")
CREATE_PAYMENT = method_path("CreatePayment")
GET_BALANCE = method_path("GetBalance")
REFUND = method_path("RefundPayment")
TRANSFER = method_path("Transfer")
LIST_TRANSACTIONS = method_path("ListTransactions")

# The mixed course-purchase workload, one slot per call in turn: 10 balance reads, 6 purchases, 2 top-ups,
# 1 refund and 1 transaction list in 20 calls.
MIXED_PATTERN = (
    *("balance", "purchase", "balance", "purchase", "balance", "top_up", "balance", "purchase", "balance", "refund"),
    *("balance", "purchase", "balance", "purchase", "balance", "top_up", "balance", "purchase", "balance", "list"),
)


@dataclass(frozen=True)
class Plan:
    """One scenario, ready to run: the key that signs and the ids that set-up made."""

    scenario: str
    key_id: str
    secret: str
    tag: str
    learners: tuple[str, ...] = ()
    creators: tuple[str, ...] = ()
    payments: tuple[str, ...] = ()

    def requests(self, process: int, processes: int, phase: str) -> Callable[[int], tuple[str, bytes]]:
        return _Requests(self, process, processes, f"{self.tag}{phase}{process}")


class _Requests:
    """Builds the calls of one process in one phase; spreads consecutive calls over different learners."""

    def __init__(self, plan: Plan, process: int, processes: int, prefix: str) -> None:
        self.plan = plan
        self.process = process
        self.processes = processes
        self.prefix = prefix
        self.random = random.Random(f"{prefix}")
        self.build = BUILDERS[plan.scenario]

    def __call__(self, index: int) -> tuple[str, bytes]:
        return self.build(self, index)

    def pick(self, items: tuple[str, ...], index: int) -> str:
        # Interleaved over processes, so the calls in flight at one time name different learners.
        return items[(index * self.processes + self.process) % len(items)]

    def learner(self, index: int) -> str:
        return self.pick(self.plan.learners, index)

    def ident(self, index: int) -> str:
        return f"{self.prefix}-{index}"


def _purchase(r: _Requests, i: int, payee: str) -> tuple[str, bytes]:
    request = pb.CreatePaymentRequest(
        order_id=r.ident(i),
        user_id=r.learner(i),
        amount_minor=PURCHASE_MINOR,
        currency=CURRENCY,
        method=pb.PAYMENT_METHOD_WALLET,
        payee_id=payee,
        description="course",
    )
    return CREATE_PAYMENT, request.SerializeToString()


def _spread_purchase(r: _Requests, i: int) -> tuple[str, bytes]:
    return _purchase(r, i, r.random.choice(r.plan.creators))


def _hot_purchase(r: _Requests, i: int) -> tuple[str, bytes]:
    return _purchase(r, i, r.plan.creators[0])


def _balance(r: _Requests, i: int) -> tuple[str, bytes]:
    return GET_BALANCE, pb.GetBalanceRequest(user_id=r.learner(i), currency=CURRENCY).SerializeToString()


def _top_up(r: _Requests, i: int) -> tuple[str, bytes]:
    request = pb.TopUpRequest(
        order_id=r.ident(i),
        user_id=r.learner(i),
        amount_minor=PURCHASE_MINOR,
        currency=CURRENCY,
        method=pb.PAYMENT_METHOD_SANDBOX,
    )
    return TOP_UP, request.SerializeToString()


def _transfer(r: _Requests, i: int) -> tuple[str, bytes]:
    request = pb.TransferRequest(
        transfer_id=r.ident(i),
        from_user_id=r.learner(i),
        to_user_id=r.learner(i + 1),
        amount_minor=1,
        currency=CURRENCY,
    )
    return TRANSFER, request.SerializeToString()


def _refund(r: _Requests, i: int) -> tuple[str, bytes]:
    request = pb.RefundPaymentRequest(
        payment_id=r.pick(r.plan.payments, i), refund_id=r.ident(i), amount_minor=PURCHASE_MINOR, reason="bench"
    )
    return REFUND, request.SerializeToString()


def _channel_purchase(r: _Requests, i: int) -> tuple[str, bytes]:
    request = pb.CreatePaymentRequest(
        order_id=r.ident(i),
        user_id=f"{r.prefix}-learner-{i % 997}",
        amount_minor=PURCHASE_MINOR,
        currency=CURRENCY,
        method=pb.PAYMENT_METHOD_ALIPAY,
        scene=pb.PAYMENT_SCENE_QR,
        payee_id=r.random.choice(r.plan.creators),
        description="course",
    )
    return CREATE_PAYMENT, request.SerializeToString()


def _list(r: _Requests, i: int) -> tuple[str, bytes]:
    request = pb.ListTransactionsRequest(user_id=r.learner(i), page_size=20)
    return LIST_TRANSACTIONS, request.SerializeToString()


_MIXED = {"balance": _balance, "purchase": _spread_purchase, "top_up": _top_up, "refund": _refund, "list": _list}


def _mixed(r: _Requests, i: int) -> tuple[str, bytes]:
    return _MIXED[MIXED_PATTERN[i % len(MIXED_PATTERN)]](r, i)


BUILDERS: dict[str, Callable[[_Requests, int], tuple[str, bytes]]] = {
    "wallet_purchase": _spread_purchase,
    "hot_creator": _hot_purchase,
    "balance_read": _balance,
    "top_up": _top_up,
    "transfer": _transfer,
    "refund": _refund,
    "channel_purchase": _channel_purchase,
    "mixed": _mixed,
}
SCENARIOS = tuple(BUILDERS)
CHANNEL_SCENARIOS = frozenset({"channel_purchase"})


# -- set-up, through the real API, before the clock runs ---------------------------------------------------


class Setup:
    """Makes what the plans need on one stack: learners funded once (shared by the scenarios), purchases."""

    def __init__(
        self,
        target: str,
        key_id: str,
        secret: str,
        *,
        learners: int,
        purchases: int,
        root_certificates: bytes | None = None,
    ) -> None:
        """`root_certificates`: the CA (PEM) of a TLS stack; None for a plaintext one."""
        self.key_id = key_id
        self.secret = secret
        self.learner_count = learners
        self.purchase_count = purchases
        self._client = PaygateClient(target, key_id, secret, timeout_s=60, root_certificates=root_certificates)
        self._learners: tuple[str, ...] = ()
        self._run = uuid.uuid4().hex[:8]

    def close(self) -> None:
        self._client.close()

    def plan(self, scenario: str) -> Plan:
        tag = f"{self._run}{SCENARIOS.index(scenario)}"
        creators = tuple(f"{tag}-creator-{n}" for n in range(CREATORS))
        if scenario == "channel_purchase":
            return Plan(scenario, self.key_id, self.secret, tag, creators=creators)
        if scenario == "top_up":
            learners = tuple(f"{tag}-learner-{n}" for n in range(self.learner_count))
            return Plan(scenario, self.key_id, self.secret, tag, learners=learners)
        learners = self.learners()
        payments: tuple[str, ...] = ()
        if scenario in {"refund", "mixed"}:
            payments = self._purchases(tag, learners)
        return Plan(scenario, self.key_id, self.secret, tag, learners, creators, payments)

    def learners(self) -> tuple[str, ...]:
        if not self._learners:
            names = tuple(f"{self._run}-learner-{n}" for n in range(self.learner_count))

            def fund(name: str) -> None:
                self._client.top_up(
                    pb.TopUpRequest(
                        order_id=f"{name}-funds",
                        user_id=name,
                        amount_minor=LEARNER_FUNDS_MINOR,
                        currency=CURRENCY,
                        method=pb.PAYMENT_METHOD_SANDBOX,
                    )
                )

            self._parallel(fund, names)
            self._learners = names
        return self._learners

    def _purchases(self, tag: str, learners: tuple[str, ...]) -> tuple[str, ...]:
        """One purchase per creator, so refunds spread over creators as they spread over payments."""

        def buy(n: int) -> str:
            payment = self._client.create_payment(
                pb.CreatePaymentRequest(
                    order_id=f"{tag}-setup-{n}",
                    user_id=learners[n % len(learners)],
                    amount_minor=SETUP_PURCHASE_MINOR,
                    currency=CURRENCY,
                    method=pb.PAYMENT_METHOD_WALLET,
                    payee_id=f"{tag}-refunded-creator-{n}",
                    description="course",
                )
            )
            return str(payment.payment_id)

        return tuple(self._parallel(buy, range(self.purchase_count)))

    @staticmethod
    def _parallel(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            return list(pool.map(function, items))
