"""The simulator as a real process (one per test module) and a small callback receiver.

A module may set PAY_AFTER_MS (default 300; 0 = manual mode) before its tests run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An aiohttp server on its own thread that records every callback and answers as scripted."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._cond = threading.Condition()
        self._received: list[Received] = []
        self._scripts: dict[str, list[tuple[int, str]]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._cond:
            self._received.append(Received(request.path, dict(request.headers), body))
            script = self._scripts.get(request.path)
            status, text = script.pop(0) if script else (200, "success")
            self._cond.notify_all()
        return web.Response(status=status, text=text)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, replies: list[tuple[int, str]]) -> None:
        with self._cond:
            self._scripts[path] = list(replies)

    def received(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self._received if r.path == path]

    def wait(self, path: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        with self._cond:
            self._cond.wait_for(lambda: len([r for r in self._received if r.path == path]) >= count, timeout)
            return [r for r in self._received if r.path == path]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def load_private(path: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_public(path: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def load_cert_key(pem: str) -> rsa.RSAPublicKey:
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return key


class Simulator:
    def __init__(self, data_dir: Path, process: subprocess.Popen[bytes], log: Path) -> None:
        self.data_dir = data_dir
        self.process = process
        self.log = log
        address = (data_dir / "channel-sim" / "listen").read_text().strip()
        self.base = f"http://{address}"
        self.merchant: dict[str, Any] = json.loads((data_dir / "channel-sim" / "merchant.json").read_text())
        self.http = httpx.Client(base_url=self.base, trust_env=False, timeout=10.0)

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"/control{path}", **kwargs)

    def order(self, channel: str, out_trade_no: str) -> dict[str, Any]:
        response = self.control("GET", f"/orders/{channel}/{out_trade_no}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def wait_order(
        self, channel: str, out_trade_no: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            order = self.order(channel, out_trade_no)
            if check(order) or time.monotonic() > deadline:
                return order
            time.sleep(0.05)

    def misbehave(self, channel: str, **patch: Any) -> dict[str, Any]:
        response = self.control("POST", f"/misbehave/{channel}", json=patch)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        assert self.control("POST", "/reset").status_code == 200

    def notifications(self, channel: str, out_trade_no: str) -> list[dict[str, Any]]:
        response = self.control("GET", "/notifications", params={"channel": channel, "out_trade_no": out_trade_no})
        result: list[dict[str, Any]] = response.json()["notifications"]
        return result


def start_simulator(data_dir: Path, pay_after_ms: int) -> Simulator:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "sim.log"
    env = {**os.environ, "PAYGATE_SIM_PAY_AFTER_MS": str(pay_after_ms), "PYTHONPATH": str(REPO)}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "channelsim", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    listen = data_dir / "channel-sim" / "listen"
    deadline = time.monotonic() + START_TIMEOUT
    while not listen.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the simulator did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return Simulator(data_dir, process, log)


def stop_simulator(sim: Simulator) -> int:
    sim.http.close()
    sim.process.send_signal(signal.SIGTERM)
    try:
        return sim.process.wait(15)
    except subprocess.TimeoutExpired:
        sim.process.kill()
        sim.process.wait(5)
        return -1


@pytest.fixture(scope="module")
def sim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    pay_after_ms = int(getattr(request.module, "PAY_AFTER_MS", 300))
    simulator = start_simulator(tmp_path_factory.mktemp("channelsim"), pay_after_ms)
    yield simulator
    code = stop_simulator(simulator)
    assert code == 0, f"the simulator did not stop cleanly ({code}):\n{simulator.log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_leftover_misbehaviour(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()
