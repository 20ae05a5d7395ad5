"""Locust load test: signed gRPC calls through the gateway, a top-up + wallet purchase + balance mix.

    make run                                   # in one terminal
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s --host 127.0.0.1:50051

Credentials come from PAYGATE_KEY_ID / PAYGATE_SECRET, or else a key is created at start with
`paygate keys create` (honouring PAYGATE_DATA_DIR / PAYGATE_DATABASE_URL, like the CLI).
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
from paygate.v1 import payment_gateway_pb2 as pb  # noqa: E402

CURRENCY = "CNY"
CREATORS = [f"creator-{n}" for n in range(20)]
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


class PaygateUser(User):
    """A learner: tops up the wallet now and then, buys courses, checks the balance."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        host = self.host or "127.0.0.1:50051"
        self.client = PaygateClient(host, _credentials["key_id"], _credentials["secret"])
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

    def call(self, method: str, request: Message, response_type: type[Message]) -> None:
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            result = self.client.call(method, request, response_type)
            length = result.response.ByteSize()
        except grpc.RpcError as error:
            # A learner with an empty wallet is business as usual, not a failure of the system.
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=method,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )

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

    @task(3)
    def buy_course(self) -> None:
        self.call(
            "CreatePayment",
            pb.CreatePaymentRequest(
                order_id=f"o-{uuid.uuid4().hex}",
                user_id=self.user_id,
                amount_minor=random.choice([990, 4_990, 19_900]),
                currency=CURRENCY,
                method=pb.PAYMENT_METHOD_WALLET,
                payee_id=random.choice(CREATORS),
                description="course",
            ),
            pb.Payment,
        )

    @task(2)
    def balance(self) -> None:
        self.call("GetBalance", pb.GetBalanceRequest(user_id=self.user_id, currency=CURRENCY), pb.Balance)
