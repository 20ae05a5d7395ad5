"""The gateway's pending-call bounds end the oldest waiting call, per connection and in total."""

from __future__ import annotations

import asyncio

from gateway.admission import InFlight, PendingCalls


async def _scenario(max_total: int, max_per_connection: int, peers: list[str]) -> tuple[list[int], list[str]]:
    """Start one waiting call per entry of `peers`, in order; return which of them were ended, and why."""
    evictions: list[str] = []
    pending = PendingCalls(max_total=max_total, max_per_connection=max_per_connection, on_evict=evictions.append)
    release = asyncio.Event()
    ended: list[int] = []

    async def call(index: int, peer: str) -> None:
        ticket = pending.enter(peer)
        try:
            await release.wait()
        except asyncio.CancelledError:
            assert pending.was_evicted(ticket)
            ended.append(index)
        finally:
            pending.leave(ticket)

    tasks = []
    for index, peer in enumerate(peers):
        tasks.append(asyncio.create_task(call(index, peer)))
        await asyncio.sleep(0)  # let it register before the next one arrives
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert len(pending) == 0
    return ended, evictions


def test_a_full_connection_loses_its_oldest_call() -> None:
    ended, why = asyncio.run(_scenario(100, 2, ["a", "b", "a", "a", "a"]))
    assert ended == [0, 2] and why == ["connection", "connection"]


def test_a_full_gateway_loses_its_oldest_call_whatever_the_connection() -> None:
    ended, why = asyncio.run(_scenario(3, 100, ["a", "b", "c", "d", "e"]))
    assert ended == [0, 1] and why == ["total", "total"]


def test_nothing_is_ended_below_the_bounds() -> None:
    assert asyncio.run(_scenario(10, 10, ["a", "b", "a"])) == ([], [])


def test_in_flight_has_a_ceiling() -> None:
    bound = InFlight(2)
    assert bound.try_enter() and bound.try_enter() and not bound.try_enter()
    bound.leave()
    assert bound.try_enter()
