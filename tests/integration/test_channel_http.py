"""The one channel HTTP client against a real HTTP server on loopback: retries, timeouts, the circuit breaker."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from runtime.errors import Unavailable
from workers.channels.base import HttpCall
from workers.channels.http import ChannelHttp, ChannelLimits, CircuitOpen, TransportFailed

READ_TIMEOUT_S = 0.3


@dataclass
class Peer:
    """A provider stand-in that behaves as each path says, and counts what it received."""

    base: str
    hits: Counter[str] = field(default_factory=Counter)


def _app(peer_hits: Counter[str]) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        peer_hits[behaviour] += 1
        if behaviour == "ok":
            return web.Response(text="fine")
        if behaviour == "fail":
            return web.Response(status=503, text="down")
        if behaviour == "slow":
            await asyncio.sleep(READ_TIMEOUT_S * 5)
            return web.Response(text="late")
        if behaviour == "flaky" and peer_hits[behaviour] == 1:
            return web.Response(status=502, text="once")
        return web.Response(text="recovered")

    app = web.Application()
    app.router.add_route("*", "/{behaviour}", handle)
    return app


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    hits: Counter[str] = Counter()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(hits))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield Peer(f"http://127.0.0.1:{port}", hits)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def _client(**overrides: float) -> ChannelHttp:
    values: dict[str, float] = {
        "read_timeout_s": READ_TIMEOUT_S,
        "connect_timeout_s": 0.5,
        "retries": 2,
        "retry_backoff_s": 0.01,
        "breaker_failures": 3,
        "breaker_open_s": 60,
        **overrides,
    }
    return ChannelHttp("testchannel", ChannelLimits(**values))  # type: ignore[arg-type]


def _call(url: str, *, idempotent: bool) -> HttpCall:
    return HttpCall("POST", url, (("content-type", "text/plain"),), b"body", idempotent, "create")


def test_a_plain_answer_passes_through(peer: Peer) -> None:
    reply = _client().send(_call(f"{peer.base}/ok", idempotent=False))
    assert (reply.status, reply.body) == (200, b"fine")


def test_a_5xx_is_retried_only_when_the_call_is_idempotent(peer: Peer) -> None:
    before = peer.hits["fail"]
    assert _client().send(_call(f"{peer.base}/fail", idempotent=False)).status == 503
    assert peer.hits["fail"] - before == 1
    assert _client().send(_call(f"{peer.base}/fail", idempotent=True)).status == 503
    assert peer.hits["fail"] - before == 1 + 3  # the first try and two retries


def test_an_idempotent_call_recovers_from_one_5xx(peer: Peer) -> None:
    reply = _client().send(_call(f"{peer.base}/flaky", idempotent=True))
    assert (reply.status, reply.body) == (200, b"recovered")


def test_a_timeout_after_sending_is_maybe_delivered_and_not_repeated(peer: Peer) -> None:
    before = peer.hits["slow"]
    with pytest.raises(TransportFailed) as failed:
        _client().send(_call(f"{peer.base}/slow", idempotent=False))
    assert failed.value.maybe_delivered
    assert peer.hits["slow"] - before == 1


def test_a_refused_connection_is_known_undelivered_and_retried() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportFailed) as failed:
        _client().send(_call(f"http://127.0.0.1:{port}/x", idempotent=False))
    assert not failed.value.maybe_delivered


def test_the_circuit_opens_after_consecutive_failures_and_fails_fast(peer: Peer) -> None:
    client = _client(retries=0)
    for _ in range(3):
        client.send(_call(f"{peer.base}/fail", idempotent=False))
    before = peer.hits["ok"]
    with pytest.raises(CircuitOpen) as refused:
        client.send(_call(f"{peer.base}/ok", idempotent=False))
    assert peer.hits["ok"] == before  # refused without a call
    assert "3 failed calls in a row" in refused.value.message
    with pytest.raises(Unavailable):
        client.check_available()


def test_a_half_open_circuit_closes_after_one_good_trial_call(peer: Peer) -> None:
    client = _client(retries=0, breaker_open_s=0)
    for _ in range(3):
        client.send(_call(f"{peer.base}/fail", idempotent=False))
    assert client.send(_call(f"{peer.base}/ok", idempotent=False)).status == 200  # the trial call
    assert not client.breaker.is_open
    client.check_available()
