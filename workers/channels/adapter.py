"""A provider behind the network, as the operations use a channel (docs/architecture.md, "Channels").

`ProviderChannel` joins a pure provider module (the protocol) with the channel's `ChannelHttp` (the network) and
turns every way a call can go wrong into a state the operations can act on without guessing:

- the provider's clear answer → its state (SUCCEEDED, PENDING, FAILED with a reason, CLOSED);
- no answer, an answer we cannot read or trust, a 5xx → UNKNOWN: the provider may hold the order, and only a
  later query may tell (the janitor asks on a back-off schedule) — never a second charge;
- the circuit open, or every slot busy → UNAVAILABLE before anything was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from workers.channels.base import (
    AttemptStatus,
    HttpCall,
    HttpReply,
    Order,
    Provider,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundOrder,
    RefundStatus,
)
from workers.channels.http import ChannelHttp, TransportFailed

log = logging.getLogger(__name__)


class ProviderChannel:
    def __init__(self, provider: Provider, http: ChannelHttp, notify_url: str, clock: Callable[[], datetime]) -> None:
        self.provider = provider
        self.method = provider.method
        self.http = http
        self.notify_url = notify_url  # where this stack receives the provider's callbacks (notifications/)
        self._clock = clock

    def check_available(self) -> None:
        self.http.check_available()

    def open(self, order: Order) -> ProviderState:
        order = replace(order, notify_url=self.notify_url)
        try:
            call = self.provider.create(order, self._clock())
        except ValueError as refused:  # the provider cannot take this order at all (a currency, a scene)
            reason = f"the {self.method.value} channel cannot take this order: {refused}"
            return ProviderState(AttemptStatus.FAILED, out_trade_no=order.out_trade_no, failure_reason=reason[:256])
        if isinstance(call, ProviderState):
            return call  # a signed redirect URL: nothing to send
        return self._ask(order.out_trade_no, call, lambda reply: self.provider.read_create(order, reply))

    def query(self, out_trade_no: str, created_at: datetime) -> ProviderState:
        call = self.provider.query(out_trade_no, self._clock(), created_at=created_at)
        return self._ask(out_trade_no, call, lambda reply: self.provider.read_query(out_trade_no, reply))

    def close(self, out_trade_no: str, trade_no: str, created_at: datetime) -> ProviderState:
        call = self.provider.close(out_trade_no, trade_no, self._clock(), created_at=created_at)
        return self._ask(out_trade_no, call, lambda reply: self.provider.read_close(out_trade_no, reply))

    def refund(self, order: RefundOrder) -> ProviderRefund:
        call = self.provider.refund(order, self._clock())
        return self._ask_refund(order, call, lambda reply: self.provider.read_refund(order, reply))

    def refund_query(self, order: RefundOrder) -> ProviderRefund:
        call = self.provider.refund_query(order, self._clock())
        return self._ask_refund(order, call, lambda reply: self.provider.read_refund_query(order, reply))

    def _ask_refund(
        self, order: RefundOrder, call: HttpCall, read: Callable[[HttpReply], ProviderRefund]
    ) -> ProviderRefund:
        try:
            return read(self.http.send(call))
        except TransportFailed as failure:
            reason = str(failure)
        except ProviderAnswerError as error:
            reason = f"{self.method.value}: {error}"
        log.warning(
            "channel refund outcome unknown",
            extra={"fields": {"channel": self.method.value, "purpose": call.purpose, "refund": order.out_refund_no}},
        )
        return ProviderRefund(RefundStatus.UNKNOWN, out_refund_no=order.out_refund_no, failure_reason=reason[:256])

    def _ask(self, out_trade_no: str, call: HttpCall, read: Callable[[HttpReply], ProviderState]) -> ProviderState:
        try:
            return read(self.http.send(call))
        except TransportFailed as failure:
            reason = str(failure)
        except ProviderAnswerError as error:
            reason = f"{self.method.value}: {error}"
        log.warning(
            "channel outcome unknown",
            extra={"fields": {"channel": self.method.value, "purpose": call.purpose, "out_trade_no": out_trade_no}},
        )
        return ProviderState(AttemptStatus.UNKNOWN, out_trade_no=out_trade_no, failure_reason=reason[:256])
