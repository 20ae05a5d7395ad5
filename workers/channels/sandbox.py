"""The in-process SANDBOX channel, for development, tests and load tests: no provider, no network.

It succeeds at once, or (deferred) leaves the attempt PENDING until `paygate sandbox confirm` delivers the
confirmation the way a provider's asynchronous notification would. It keeps no state: a query of a deferred
attempt says PENDING, and a close always succeeds.
"""

from __future__ import annotations

from datetime import datetime

from workers.channels.base import AttemptStatus, Order, ProviderRefund, ProviderState, RefundOrder, RefundStatus
from workers.domain.types import Method


class SandboxChannel:
    method = Method.SANDBOX

    def __init__(self, *, deferred: bool = False) -> None:
        self.deferred = deferred

    def check_available(self) -> None:
        return None  # in-process: always there

    def open(self, order: Order) -> ProviderState:
        status = AttemptStatus.PENDING if self.deferred else AttemptStatus.SUCCEEDED
        return self._state(order.out_trade_no, status)

    def query(self, out_trade_no: str, created_at: datetime) -> ProviderState:
        return self._state(out_trade_no, AttemptStatus.PENDING if self.deferred else AttemptStatus.SUCCEEDED)

    def close(self, out_trade_no: str, trade_no: str, created_at: datetime) -> ProviderState:
        return self._state(out_trade_no, AttemptStatus.CLOSED)

    def refund(self, order: RefundOrder) -> ProviderRefund:
        return ProviderRefund(RefundStatus.SUCCEEDED, order.out_refund_no, refund_no=f"sbx-{order.out_refund_no}")

    def refund_query(self, order: RefundOrder) -> ProviderRefund:
        return self.refund(order)

    @staticmethod
    def _state(out_trade_no: str, status: AttemptStatus) -> ProviderState:
        # The sandbox's "trade number" is derived from ours, so a repeated call names the same trade.
        return ProviderState(status=status, out_trade_no=out_trade_no, trade_no=f"sbx-{out_trade_no}")
