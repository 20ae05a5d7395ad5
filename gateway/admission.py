"""Bounds that keep unauthenticated callers from denying service to authenticated ones (docs/architecture.md,
"Calls that never finish").

A call is *pending* from the moment its signature headers pass the header checks until its request message has
arrived (or it ends): it costs the gateway memory and a coroutine, and an attacker with a known key id could hold
many such calls open without ever sending a body. Pending calls are bounded per connection and in total; when a
bound is reached, the **oldest** pending call is ended (RESOURCE_EXHAUSTED), not the newcomer: an honest call
presents its body within microseconds of its headers, so it always gets in, while a caller that holds calls open
loses them first (the usual defence against slow-request attacks). Each pending call is also ended when its
request has not arrived within the read timeout.

Authenticated calls in flight to workers are bounded separately (`InFlight`), so work that passed the signature
check never competes with calls that have not.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.auth import AuthenticatedCaller
from runtime.errors import ResourceExhausted
from runtime.metrics import GatewayMetrics
from runtime.settings import Settings


class PendingCalls:
    def __init__(self, *, max_total: int, max_per_connection: int, on_evict: Callable[[str], None]) -> None:
        self._max_total = max_total
        self._max_per_connection = max_per_connection
        self._on_evict = on_evict
        self._tickets = itertools.count()
        self._all: OrderedDict[int, tuple[str, asyncio.Task[object]]] = OrderedDict()  # oldest first
        self._by_peer: dict[str, OrderedDict[int, None]] = {}
        self._evicted: set[int] = set()

    def __len__(self) -> int:
        return len(self._all)

    def enter(self, peer: str) -> int:
        """Register the current task as a pending call of `peer`, ending the oldest one(s) first if full."""
        task = asyncio.current_task()
        assert task is not None
        of_peer = self._by_peer.setdefault(peer, OrderedDict())
        if len(of_peer) >= self._max_per_connection:
            self._evict(next(iter(of_peer)), "connection")
        if len(self._all) >= self._max_total:
            self._evict(next(iter(self._all)), "total")
        ticket = next(self._tickets)
        self._all[ticket] = (peer, task)
        of_peer[ticket] = None
        return ticket

    def leave(self, ticket: int) -> None:
        entry = self._all.pop(ticket, None)
        self._evicted.discard(ticket)
        if entry is None:
            return
        of_peer = self._by_peer.get(entry[0])
        if of_peer is not None:
            of_peer.pop(ticket, None)
            if not of_peer:
                del self._by_peer[entry[0]]

    def was_evicted(self, ticket: int) -> bool:
        return ticket in self._evicted

    def _evict(self, ticket: int, bound: str) -> None:
        peer, task = self._all.pop(ticket)
        of_peer = self._by_peer[peer]
        of_peer.pop(ticket, None)
        if not of_peer:
            del self._by_peer[peer]
        self._evicted.add(ticket)
        task.cancel()  # the call's read is interrupted; its handler answers RESOURCE_EXHAUSTED
        self._on_evict(bound)


class InFlight:
    """A count of authenticated calls forwarded to workers and not yet answered, with a ceiling."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.count = 0

    def try_enter(self) -> bool:
        if self.count >= self._limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


class KeyConcurrency:
    """Unary calls of each key in flight to workers through this gateway, each key with its own ceiling
    (docs/security.md, "Rate limits and quotas"). Per gateway process: with N gateways a key may have N times its
    limit in flight. Event streams are not counted (they have their own bound, `max_event_streams`)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def try_enter(self, key_id: str, limit: int) -> bool:
        """Take a slot of `key_id` (limit 0: no limit); False when it has `limit` calls in flight already."""
        count = self._counts.get(key_id, 0)
        if limit and count >= limit:
            return False
        self._counts[key_id] = count + 1
        return True

    def leave(self, key_id: str) -> None:
        count = self._counts.get(key_id, 0) - 1
        if count > 0:
            self._counts[key_id] = count
        else:
            self._counts.pop(key_id, None)  # the map holds only keys with calls in flight: bounded by them

    def in_flight(self, key_id: str) -> int:
        return self._counts.get(key_id, 0)


@dataclass(frozen=True)
class Admission:
    """The bounds of docs/architecture.md, "Calls that never finish" (settings, gateway/admission.py)."""

    read_timeout_s: float
    pending: PendingCalls
    in_flight: InFlight
    per_key: KeyConcurrency
    default_deadline_s: float  # of a forwarded unary call that has none (settings.default_call_deadline_s)
    max_deadline_s: float  # no forwarded unary call gets a longer one (settings.max_call_deadline_s)

    def enter(self, caller: AuthenticatedCaller, metrics: GatewayMetrics) -> None:
        """A slot among the calls in flight to workers, in all and of the caller's key, or RESOURCE_EXHAUSTED."""
        if not self.in_flight.try_enter():
            metrics.admission_refusals.labels("in_flight").inc()
            raise ResourceExhausted(
                "the gateway is at its limit of calls in flight to workers; retry after the delay",
                reason="GATEWAY_AT_CAPACITY",
                retry_after_ms=200,
            )
        if not self.per_key.try_enter(caller.key_id, caller.max_concurrent_calls):
            self.in_flight.leave()
            metrics.admission_refusals.labels("too_many_concurrent_calls").inc()
            raise ResourceExhausted(
                f"key {caller.key_id} already has its maximum of {caller.max_concurrent_calls} calls in flight "
                "through this gateway; retry after the delay (the call was not applied)",
                reason="TOO_MANY_CONCURRENT_CALLS",
                retry_after_ms=50,
            )

    def leave(self, caller: AuthenticatedCaller) -> None:
        self.in_flight.leave()
        self.per_key.leave(caller.key_id)

    def timeout_s(self, remaining_s: float | None) -> float:
        """The deadline of the forward: the caller's, else the default; never more than the cap."""
        if remaining_s is None:
            return self.default_deadline_s
        return max(0.001, min(remaining_s, self.max_deadline_s))

    @classmethod
    def of(cls, settings: Settings, metrics: GatewayMetrics) -> Admission:
        return cls(
            read_timeout_s=settings.request_read_timeout_s,
            pending=PendingCalls(
                max_total=settings.max_pending_calls,
                max_per_connection=settings.max_pending_calls_per_connection,
                on_evict=lambda bound: metrics.admission_refusals.labels(f"evicted_{bound}").inc(),
            ),
            in_flight=InFlight(settings.max_forwarded_calls),
            per_key=KeyConcurrency(),
            default_deadline_s=settings.default_call_deadline_s,
            max_deadline_s=settings.max_call_deadline_s,
        )
