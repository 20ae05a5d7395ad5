"""Payment channels: where money comes in from. Each has a clearing account in the ledger.

Only the in-process SANDBOX channel exists so far: it succeeds at once, for development, tests and load tests.
Alipay, WeChat Pay, UnionPay and card adapters plug in here behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from paygate.errors import Unimplemented
from paygate.ids import new_id
from workers.domain import Method


@dataclass(frozen=True)
class ChannelOutcome:
    succeeded: bool
    reference: str
    failure_reason: str = ""


class Channel(Protocol):
    method: Method

    def collect(self, payment_id: str, amount_minor: int, currency: str) -> ChannelOutcome:
        """Take `amount_minor` from the payer through the channel."""
        ...


class SandboxChannel:
    method = Method.SANDBOX

    def collect(self, payment_id: str, amount_minor: int, currency: str) -> ChannelOutcome:
        return ChannelOutcome(succeeded=True, reference=new_id("sbx"))


class Channels:
    def __init__(self, channels: list[Channel] | None = None) -> None:
        self._by_method = {c.method: c for c in (channels if channels is not None else [SandboxChannel()])}

    def get(self, method: Method) -> Channel:
        channel = self._by_method.get(method)
        if channel is None:
            available = ", ".join(m.name for m in self._by_method) or "none"
            raise Unimplemented(
                f"payment method {method.name} is not available on this deployment yet (available: {available})"
            )
        return channel
