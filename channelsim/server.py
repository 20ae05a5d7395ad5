"""The simulator's HTTP server: every provider, the control surface, the misbehaviour middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from channelsim.alipay import Alipay
from channelsim.card import Card
from channelsim.common import TEST_CARDS
from channelsim.control import Control
from channelsim.engine import Sim
from channelsim.keys import merchant_config
from channelsim.unionpay import UnionPay
from channelsim.wechatpay import WechatPay

log = logging.getLogger("channelsim")

SIM = web.AppKey("sim", Sim)
HOLD_SECONDS = 60.0  # the `timeout` misbehaviour holds an answer at most this long
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _hold(sim: Sim, request: web.Request) -> None:
    """Keep the client waiting until it gives up (disconnects), the server stops, or HOLD_SECONDS pass."""
    waited = 0.0
    while waited < HOLD_SECONDS and not sim.stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await sim.sleep(0.2)
        waited += 0.2


@web.middleware
async def misbehaviour(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = request.app[SIM]
    channel = request.path.split("/", 2)[1]
    provider = sim.providers.get(channel)
    if provider is None:
        return await handler(request)
    settings = sim.misbehave.get(channel)
    if settings["latency_ms"]:
        await sim.sleep(settings["latency_ms"] / 1000)
    if sim.misbehave.take_5xx(channel):
        log.info("%s: answering %s %s with a simulated 5xx", channel, request.method, request.path)
        return provider.error_5xx()
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s: %s %s failed", channel, request.method, request.path)
        response = provider.internal_error()
    if settings["timeout"]:
        # The request was processed; only the answer is withheld (as when a real answer is lost on the way).
        await _hold(sim, request)
    return response


def build_app(data_dir: Path, *, pay_after_ms: int = 300) -> web.Application:
    """The whole simulator as an aiohttp application (usable in-process); state and keys live under data_dir."""
    sim = Sim(data_dir, pay_after_ms)
    app = web.Application(middlewares=[misbehaviour], client_max_size=1024 * 1024)
    app[SIM] = sim
    Control(sim).add_routes(app)
    for kind in (Alipay, WechatPay, UnionPay, Card):
        provider = kind(sim)
        sim.providers[provider.name] = provider
        provider.add_routes(app)

    async def start(_app: web.Application) -> None:
        await sim.start()

    async def shutdown(_app: web.Application) -> None:
        sim.stopping.set()  # wakes held requests and sleeping latencies before the server waits for handlers

    async def cleanup(_app: web.Application) -> None:
        await sim.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"listen address must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_merchant_file(sim: Sim, base_url: str, listen: str) -> Path:
    config = merchant_config(sim.keys, base_url)
    config["listen"] = listen
    config["pay_after_ms"] = sim.pay_after_ms
    config["card"]["test_cards"] = TEST_CARDS
    path = sim.keys.directory / "merchant.json"
    _write(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return path


async def serve(listen: str, data_dir: Path, *, pay_after_ms: int = 300, stop: asyncio.Event | None = None) -> None:
    """Run the simulator on HOST:PORT until `stop` is set. Port 0 picks a free port; the bound address is written to
    DATA_DIR/channel-sim/listen (and merchant.json) once the socket is listening."""
    host, port = parse_listen(listen)
    stop = stop or asyncio.Event()
    app = build_app(data_dir, pay_after_ms=pay_after_ms)
    sim = app[SIM]
    listen_file = sim.keys.directory / "listen"
    listen_file.unlink(missing_ok=True)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        if ":" in connect_host and not connect_host.startswith("["):
            connect_host = f"[{connect_host}]"
        address = f"{connect_host}:{bound_port}"
        merchant = write_merchant_file(sim, f"http://{address}", address)
        _write(listen_file, address + "\n")
        log.info(
            "channel-sim listening on http://%s (pay_after_ms=%d; merchant config %s)",
            address,
            sim.pay_after_ms,
            merchant,
        )
        await stop.wait()
    finally:
        log.info("channel-sim stopping")
        sim.stopping.set()
        await runner.cleanup()
        listen_file.unlink(missing_ok=True)
