"""Health-aware round-robin over worker endpoints (docs/architecture.md, "The gateway").

A worker leaves the rotation when its health check fails or a connection to it fails, and comes back when its
health check passes again. Worker addresses are a list; an entry `dns:HOST:PORT` is re-resolved on every
health round, so a Kubernetes headless Service (one A record per worker pod) works as one entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.grpc_server import WORKER_CHANNEL_OPTIONS
from runtime.metrics import GatewayMetrics
from runtime.settings import Settings
from runtime.tls import worker_channel, worker_channel_credentials

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = WORKER_CHANNEL_OPTIONS
MAX_DNS_ENDPOINTS = 256

# Marks of a failure to connect, where the request provably never reached the worker.
_NOT_DELIVERED_MARKS = ("failed to connect", "connections to all backends failing", "Connection refused")


def never_delivered(error: grpc.aio.AioRpcError) -> bool:
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    text = f"{error.details()} {error.debug_error_string()}"
    return any(mark in text for mark in _NOT_DELIVERED_MARKS)


@dataclass
class WorkerEndpoint:
    address: str
    channel: grpc.aio.Channel
    healthy: bool = False
    methods: dict[str, grpc.aio.UnaryUnaryMultiCallable] = field(default_factory=dict)
    streams: dict[str, grpc.aio.UnaryStreamMultiCallable] = field(default_factory=dict)

    def method(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
        callable_ = self.methods.get(path)
        if callable_ is None:
            # No (de)serializers: request and response bytes pass through untouched.
            callable_ = self.channel.unary_unary(path)
            self.methods[path] = callable_
        return callable_

    def stream_method(self, path: str) -> grpc.aio.UnaryStreamMultiCallable:
        """A method that answers with a stream (StreamEvents), bytes in and out like the others."""
        callable_ = self.streams.get(path)
        if callable_ is None:
            callable_ = self.streams[path] = self.channel.unary_stream(path)
        return callable_


def expand(address: str) -> list[str]:
    """`dns:HOST:PORT` → one `IP:PORT` per address record; anything else as given."""
    if not address.startswith("dns:"):
        return [address]
    host, _, port = address[4:].rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        log.warning("cannot resolve worker address %s", address)
        return []
    hosts = {str(info[4][0]) for info in infos}
    found = sorted(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host in hosts)
    return found[:MAX_DNS_ENDPOINTS]


class WorkerPool:
    def __init__(
        self,
        addresses: list[str],
        *,
        health_interval_s: float,
        metrics: GatewayMetrics | None = None,
        on_change: Callable[[bool], None] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one worker address is required")
        self._configured = addresses
        self._credentials = credentials  # mutual TLS to the workers (runtime/tls.py); None: dev plaintext
        self._interval_s = health_interval_s
        self._metrics = metrics
        self._on_change = on_change or (lambda any_healthy: None)
        self._endpoints: list[WorkerEndpoint] = []
        self._next = 0
        self._task: asyncio.Task[None] | None = None
        self._any_healthy = False

    @classmethod
    def for_gateway(
        cls, settings: Settings, addresses: list[str], metrics: GatewayMetrics, on_change: Callable[[bool], None]
    ) -> WorkerPool:
        """A gateway's pool: a health round every `health_interval_s`, mutual TLS to the workers when configured
        (the internal material is read here, before anything connects; runtime/tls.py)."""
        credentials = worker_channel_credentials(settings)
        interval_s = settings.health_interval_s
        return cls(
            addresses, health_interval_s=interval_s, metrics=metrics, on_change=on_change, credentials=credentials
        )

    @property
    def mutual_tls(self) -> bool:
        return self._credentials is not None

    @property
    def endpoints(self) -> list[WorkerEndpoint]:
        return list(self._endpoints)

    async def start(self) -> None:
        await self._refresh()
        self._task = asyncio.create_task(self._health_loop(), name="worker-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(e.channel.close() for e in self._endpoints), return_exceptions=True)

    def rotation(self) -> Iterator[WorkerEndpoint]:
        """Healthy endpoints, each at most once, starting with the next one in round-robin order."""
        endpoints = self._endpoints
        count = len(endpoints)
        if count == 0:
            return
        start = self._next % count
        self._next = (start + 1) % count
        for offset in range(count):
            endpoint = endpoints[(start + offset) % count]
            if endpoint.healthy:
                yield endpoint

    def mark_unhealthy(self, endpoint: WorkerEndpoint, reason: str) -> None:
        if endpoint.healthy:
            log.warning(
                "worker left the rotation", extra={"fields": {"worker_address": endpoint.address, "reason": reason}}
            )
        self._set_health(endpoint, healthy=False)

    # -- health ----------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._refresh()
            except Exception:  # keep checking whatever one round does
                log.exception("health round failed")

    async def _refresh(self) -> None:
        wanted: list[str] = []
        for address in self._configured:
            wanted.extend(await asyncio.to_thread(expand, address) if address.startswith("dns:") else [address])
        current = {e.address: e for e in self._endpoints}
        endpoints = [
            current.get(address) or WorkerEndpoint(address, worker_channel(address, self._credentials, CHANNEL_OPTIONS))
            for address in dict.fromkeys(wanted)
        ]
        for gone in set(current) - {e.address for e in endpoints}:
            await current[gone].channel.close()
            if self._metrics is not None:
                # Drop the series, or a stale 1 for a scaled-away worker would mask a "no healthy worker" alert.
                # Zero first: in multiprocess mode (`paygate serve`) the value lives on in this process's file.
                self._metrics.worker_healthy.labels(gone).set(0)
                self._metrics.worker_healthy.remove(gone)
        self._endpoints = endpoints
        await asyncio.gather(*(self._check(e) for e in endpoints))
        any_healthy = any(e.healthy for e in endpoints)
        if any_healthy != self._any_healthy:
            self._any_healthy = any_healthy
            self._on_change(any_healthy)

    async def _check(self, endpoint: WorkerEndpoint) -> None:
        stub = health_pb2_grpc.HealthStub(endpoint.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=min(self._interval_s, 1.0))
            healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            healthy = False
        if healthy and not endpoint.healthy:
            log.info("worker joined the rotation", extra={"fields": {"worker_address": endpoint.address}})
        elif not healthy and endpoint.healthy:
            log.warning("worker failed its health check", extra={"fields": {"worker_address": endpoint.address}})
        self._set_health(endpoint, healthy=healthy)

    def _set_health(self, endpoint: WorkerEndpoint, *, healthy: bool) -> None:
        endpoint.healthy = healthy
        if self._metrics is not None:
            self._metrics.worker_healthy.labels(endpoint.address).set(1 if healthy else 0)
