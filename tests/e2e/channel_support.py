"""Driving a stack that runs channels: its simulator's control surface, card tokens, waiting for a status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, wait_until

SUCCESS_CARD = "4242424242424242"
DECLINE_CARDS = {
    "insufficient_funds": "4000000000009995",
    "do_not_honor": "4000000000000002",
    "expired_card": "4000000000000069",
    "incorrect_cvc": "4000000000000127",
    "fraudulent": "4100000000000019",
}


@dataclass
class Simulator:
    """The stack's channel simulator, as a test drives it (its control surface and the card token API)."""

    base_url: str
    merchant: dict[str, Any]

    @classmethod
    def of(cls, stack: Stack) -> Simulator:
        merchant = json.loads((stack.data_dir / "channel-sim" / "merchant.json").read_text())
        return cls(f"http://{stack.sim_listen}", merchant)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.base_url}/control{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    @contextmanager
    def misbehaving(self, channel: str, **settings: Any) -> Iterator[None]:
        self.control("POST", f"/misbehave/{channel}", {"clear": True, **settings})
        try:
            yield
        finally:
            self.control("POST", f"/misbehave/{channel}", {"clear": True})

    def order(self, channel: str, out_trade_no: str) -> dict[str, Any]:
        return dict(self.control("GET", f"/orders/{channel}/{out_trade_no}"))

    def card_token(self, number: str = SUCCESS_CARD) -> str:
        api_key = Path(self.merchant["card"]["api_key_path"]).read_text().strip()
        response = httpx.post(
            f"{self.base_url}/card/v1/tokens",
            json={"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["id"])


def wait_for_status(
    client: PaygateClient, payment_id: str, status: int, what: str = "", attempts: int = 300
) -> pb.Payment:
    found: list[pb.Payment] = []

    def reached() -> bool:
        payment = client.get_payment(pb.GetPaymentRequest(payment_id=payment_id))
        found[:] = [payment]
        return payment.status == status

    wait_until(reached, attempts=attempts, what=what or f"payment {payment_id} {pb.PaymentStatus.Name(status)}")
    return found[0]


def counter(stack: Stack, name: str, **labels: str) -> float:
    """The sum of a counter's series with these labels in the stack's /metrics (0 before the first increment)."""
    total = 0.0
    for line in stack.metrics_text().splitlines():
        if not line.startswith(name + "{"):
            continue
        series, value = line.rsplit(" ", 1)
        pairs = dict(part.split("=", 1) for part in series[len(name) + 1 : -1].split(",") if "=" in part)
        if all(pairs.get(key) == f'"{wanted}"' for key, wanted in labels.items()):
            total += float(value)
    return total
