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
