"""Payment channels: where money comes in from. Each has a clearing account in the ledger.

Only the in-process SANDBOX channel exists so far: it succeeds at once, for development, tests and load tests.
Alipay, WeChat Pay, UnionPay and card adapters plug in here behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from runtime.errors import Unimplemented
from runtime.ids import new_id
from workers.domain.types import Method


@dataclass(frozen=True)
class ChannelOutcome:
    succeeded: bool
    reference: str
    failure_reason: str = ""
    # The channel accepted the payment but confirms it later (a notification): the payment stays PENDING.
    pending: bool = False


class Channel(Protocol):
    method: Method

    def collect(self, payment_id: str, amount_minor: int, currency: str) -> ChannelOutcome:
        """Take `amount_minor` from the payer through the channel."""
        ...


class SandboxChannel:
    """Succeeds at once, or (deferred) leaves the payment PENDING until `paygate sandbox confirm` delivers the
    confirmation the way Alipay's or WeChat Pay's asynchronous notification would."""

    method = Method.SANDBOX

    def __init__(self, *, deferred: bool = False) -> None:
        self.deferred = deferred

    def collect(self, payment_id: str, amount_minor: int, currency: str) -> ChannelOutcome:
        if self.deferred:
            return ChannelOutcome(succeeded=False, reference=new_id("sbx"), pending=True)
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
