"""Locust load tests: signed gRPC calls through the gateway, as the platform's services make them.

Three scenarios, one User class each (name the ones to run; all three share the users otherwise):

- `CourseBuyer` — the mixed course-purchase workload: a learner tops up now and then, buys courses from many
  creators, checks the balance, looks at a payment and the first page of the history, and sometimes asks for a
  refund.
- `HotCreatorBuyer` — a best-selling course: every purchase pays one creator (the hot account of group commit).
- `RefundStorm` — purchases refunded at once, in part and in full, each refund sent twice with the same refund id
  (the second must be answered from its record).

    make run                                        # in one terminal
    make loadtest SCENARIO=CourseBuyer              # 30 s headless; CSV and HTML go to loadtest-results/
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s --host 127.0.0.1:50051 \
        --csv loadtest-results/run --html loadtest-results/run.html HotCreatorBuyer

Distributed (a master and any number of workers, here on one machine; docs/benchmarks.md, "Locust"):

    .venv/bin/locust -f loadtest/locustfile.py --master --headless --expect-workers 2 -u 40 -r 20 -t 30s \
        --host 127.0.0.1:50051 --csv loadtest-results/distributed CourseBuyer &
    .venv/bin/locust -f loadtest/locustfile.py --worker --master-host 127.0.0.1 &   # twice

Credentials come from PAYGATE_KEY_ID / PAYGATE_SECRET, or else a key is created at start with
`paygate keys create` (honouring PAYGATE_DATA_DIR / PAYGATE_DATABASE_URL, like the CLI).

TLS: the gateway's CA is PAYGATE_LOADTEST_CA, else the dev CA `paygate serve` made (`<PAYGATE_DATA_DIR or
.paygate>/tls/ca.pem`) when it exists; PAYGATE_LOADTEST_PLAINTEXT=1 calls a `paygate serve --plaintext` stack.
"""

from __future__ import annotations

# grpc must run on gevent's loop before any channel exists, or Locust's greenlets block each other.
import grpc.experimental.gevent as grpc_gevent  # isort: skip

grpc_gevent.init_gevent()

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from locust import User, between, events, task  # noqa: E402

from paygate.client import PaygateClient  # noqa: E402
from paygate.retry import NO_RETRY  # noqa: E402
from paygate.v1 import payment_gateway_pb2 as pb  # noqa: E402

CURRENCY = "CNY"
CREATORS = [f"creator-{n}" for n in range(20)]
HOT_CREATOR = "creator-bestseller"
_credentials: dict[str, str] = {}


@events.test_start.add_listener
def _credentials_for_the_run(environment: Any, **_: Any) -> None:
    key_id, secret = os.environ.get("PAYGATE_KEY_ID"), os.environ.get("PAYGATE_SECRET")
    if not (key_id and secret):
        created = subprocess.run(
            [sys.executable, "-m", "stack", "keys", "create", "--name", "loadtest", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        key = json.loads(created.stdout)
        key_id, secret = key["key_id"], key["secret"]
    _credentials.update(key_id=key_id, secret=secret)


def _root_certificates() -> str | None:
    """The CA to verify the gateway with, or None for plaintext (see the module's docstring)."""
    if os.environ.get("PAYGATE_LOADTEST_PLAINTEXT") == "1":
        return None
    configured = os.environ.get("PAYGATE_LOADTEST_CA")
    if configured:
        return configured
    dev_ca = os.path.join(os.environ.get("PAYGATE_DATA_DIR") or ".paygate", "tls", "ca.pem")
    return dev_ca if os.path.exists(dev_ca) else None


class PaygateUser(User):
    """A learner with a funded wallet and a signed client; the scenarios below say what it does."""

    abstract = True
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        host = self.host or "127.0.0.1:50051"
        root_certificates = _root_certificates()
        # No client retries: Locust reports what the stack answered to each call, refusals included.
        self.client = PaygateClient(
            host, _credentials["key_id"], _credentials["secret"], root_certificates=root_certificates, retry=NO_RETRY
        )
        self.user_id = f"lt-{uuid.uuid4().hex[:12]}"
        self.call(
            "TopUp",
            pb.TopUpRequest(
                order_id=f"t-{uuid.uuid4().hex}",
                user_id=self.user_id,
                amount_minor=1_000_000,
                currency=CURRENCY,
                method=pb.PAYMENT_METHOD_SANDBOX,
            ),
            pb.Payment,
        )

    def on_stop(self) -> None:
        self.client.close()

    def call(self, method: str, request: Message, response_type: type[Message], name: str = "") -> Any:
        """One signed call reported to Locust; the response, or None when it failed."""
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        response = None
        try:
            response = self.client.call(method, request, response_type).response
            length = response.ByteSize()
        except grpc.RpcError as error:
            # A learner with an empty wallet is business as usual, not a failure of the system.
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=name or method,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )
        return response

    def buy(self, payee_id: str, amount_minor: int | None = None) -> Any:
        return self.call(
            "CreatePayment",
            pb.CreatePaymentRequest(
                order_id=f"o-{uuid.uuid4().hex}",
                user_id=self.user_id,
                amount_minor=amount_minor or random.choice([990, 4_990, 19_900]),
                currency=CURRENCY,
                method=pb.PAYMENT_METHOD_WALLET,
                payee_id=payee_id,
                description="course",
            ),
            pb.Payment,
        )

    def refund(self, payment_id: str, refund_id: str, amount_minor: int, name: str = "RefundPayment") -> Any:
        request = pb.RefundPaymentRequest(
            payment_id=payment_id, refund_id=refund_id, amount_minor=amount_minor, reason="learner asked"
        )
        return self.call("RefundPayment", request, pb.Refund, name=name)


class CourseBuyer(PaygateUser):
    """The mixed course-purchase workload."""

    def on_start(self) -> None:
        super().on_start()
        self.payments: list[str] = []

    @task(1)
    def top_up(self) -> None:
        self.call(
            "TopUp",
            pb.TopUpRequest(
                order_id=f"t-{uuid.uuid4().hex}",
                user_id=self.user_id,
                amount_minor=random.randint(1_000, 50_000),
                currency=CURRENCY,
                method=pb.PAYMENT_METHOD_SANDBOX,
            ),
            pb.Payment,
        )

    @task(6)
    def buy_course(self) -> None:
        payment = self.buy(random.choice(CREATORS))
        if payment is not None:
            self.payments = [*self.payments[-19:], payment.payment_id]

    @task(4)
    def balance(self) -> None:
        self.call("GetBalance", pb.GetBalanceRequest(user_id=self.user_id, currency=CURRENCY), pb.Balance)

    @task(2)
    def look_at_a_payment(self) -> None:
        if self.payments:
            self.call("GetPayment", pb.GetPaymentRequest(payment_id=random.choice(self.payments)), pb.Payment)

    @task(1)
    def history(self) -> None:
        request = pb.ListTransactionsRequest(user_id=self.user_id, page_size=20)
        self.call("ListTransactions", request, pb.ListTransactionsResponse)

    @task(1)
    def ask_for_a_refund(self) -> None:
        if self.payments:
            self.refund(self.payments.pop(0), f"r-{uuid.uuid4().hex}", 100)


class HotCreatorBuyer(PaygateUser):
    """Every purchase pays the one best-selling creator."""

    @task
    def buy_the_bestseller(self) -> None:
        self.buy(HOT_CREATOR)


class RefundStorm(PaygateUser):
    """Buy, then refund part and the rest at once; every refund is sent twice with the same refund id."""

    @task
    def buy_and_refund(self) -> None:
        payment = self.buy(random.choice(CREATORS), amount_minor=4_990)
        if payment is None:
            return
        for amount_minor in (1_990, 3_000):
            refund_id = f"r-{uuid.uuid4().hex}"
            first = self.refund(payment.payment_id, refund_id, amount_minor)
            again = self.refund(payment.payment_id, refund_id, amount_minor, name="RefundPayment (repeated)")
            if first is not None and again is not None and again != first:
                self.environment.events.request.fire(
                    request_type="check",
                    name="repeated refund answered from its record",
                    response_time=0,
                    response_length=0,
                    exception=AssertionError("a repeated refund id got a different refund"),
                    context={},
                )
