"""The gateway process: verify, pick a healthy worker, forward the raw request bytes (DESIGN.md §1).

The gateway never parses payment messages. A generic handler with no (de)serializers receives each
`paygate.v1.PaymentGateway` call as bytes, the signature is checked over exactly those bytes, and the same bytes
go to a worker together with the authenticated caller (`x-paygate-owner`). The worker's response bytes, status
and rich error details come back unchanged, with `x-paygate-worker` and `x-request-id` added.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from gateway.auth import Authenticator, AuthFailure, KeyCache
from gateway.keystore import KeyStore, load_master_key
from gateway.routing import WorkerPool, never_delivered
from paygate import logs
from paygate.db import Database
from paygate.errors import ConfigurationError, PaygateError, Unavailable, to_rpc_status
from paygate.grpc_support import SERVER_OPTIONS, bind
from paygate.ids import new_id
from paygate.metrics import GatewayMetrics, process_registry, serve_metrics
from paygate.redis_support import connect_async
from paygate.scopes import METHOD_PATHS, READ_ONLY_PATHS, SERVICE_NAME
from paygate.settings import Settings
from paygate.signing import CALLER_KEY_HEADER, OWNER_HEADER, REQUEST_ID_HEADER, REQUEST_ID_PATTERN, WORKER_HEADER

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 30.0
# Trailing metadata that gRPC itself manages or that we set; everything else from the worker passes back as is.
_RELAYED_OURSELVES = frozenset({"grpc-status", "grpc-message", REQUEST_ID_HEADER})

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class Forwarder:
    def __init__(self, authenticator: Authenticator, pool: WorkerPool, metrics: GatewayMetrics) -> None:
        self._auth = authenticator
        self._pool = pool
        self._metrics = metrics

    def handler_for(self, path: str) -> Handler:
        method = path.rsplit("/", 1)[-1]

        async def handle(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self.forward(path, method, body, context)

        return handle

    async def forward(self, path: str, method: str, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        labels = ("unary", SERVICE_NAME, method)
        self._metrics.started.labels(*labels).inc()
        metadata = tuple(context.invocation_metadata() or ())
        request_id = _request_id(metadata)
        logs.request_id_var.set(request_id)
        code = grpc.StatusCode.OK
        try:
            try:
                caller = await self._auth.authenticate(path, metadata, body)
            except AuthFailure as failure:
                self._metrics.auth_failures.labels(failure.rule).inc()
                raise
            except PaygateError as denied:  # PERMISSION_DENIED
                self._metrics.auth_failures.labels(denied.reason.lower()).inc()
                raise
            except Exception as error:  # Redis or the key store: the one boundary for foreign errors here
                raise _translate(error, request_id) from None
            forward_metadata = (
                (OWNER_HEADER, caller.owner),
                (CALLER_KEY_HEADER, caller.key_id),
                (REQUEST_ID_HEADER, request_id),
            )
            remaining = context.time_remaining()
            timeout = DEFAULT_DEADLINE_S if remaining is None else max(0.001, min(remaining, DEFAULT_DEADLINE_S))
            for endpoint in self._pool.rotation():
                call = endpoint.method(path)(body, metadata=forward_metadata, timeout=timeout)
                try:
                    response: bytes = await call
                except grpc.aio.AioRpcError as error:
                    if never_delivered(error):
                        self._pool.mark_unhealthy(endpoint, "connect failed")
                        self._metrics.forwarded.labels(endpoint.address, "not_delivered").inc()
                        continue  # provably never reached a worker: safe to try the next one
                    if _transport_failure(error):
                        self._pool.mark_unhealthy(endpoint, "connection lost")
                        if path in READ_ONLY_PATHS:
                            # A read changes nothing, so even a maybe-delivered one is safe to send again.
                            self._metrics.forwarded.labels(endpoint.address, "read_retried").inc()
                            continue
                    self._metrics.forwarded.labels(endpoint.address, "error").inc()
                    code = error.code()
                    await self._relay_error(error, request_id, context)
                    raise  # unreachable: abort raises
                self._metrics.forwarded.labels(endpoint.address, "ok").inc()
                worker = _first(await call.trailing_metadata(), WORKER_HEADER) or endpoint.address
                context.set_trailing_metadata(((WORKER_HEADER, worker), (REQUEST_ID_HEADER, request_id)))
                return response
            raise Unavailable("no worker can serve right now; retry shortly (the call was not applied)")
        except PaygateError as error:
            code = error.code
            status = to_rpc_status(error)
            await context.abort(
                status.code, status.details, (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id))
            )
            raise  # unreachable
        finally:
            self._metrics.handled.labels(*labels, code.name).inc()
            self._metrics.handling_seconds.labels(*labels).observe(time.perf_counter() - started)

    @staticmethod
    async def _relay_error(error: grpc.aio.AioRpcError, request_id: str, context: grpc.aio.ServicerContext) -> None:
        """Pass a worker's status through unchanged, rich details (grpc-status-details-bin) included."""
        trailers = [(k, v) for k, v in (error.trailing_metadata() or ()) if k not in _RELAYED_OURSELVES]
        trailers.append((REQUEST_ID_HEADER, request_id))
        details = error.details() or ""
        if _transport_failure(error):
            # The connection broke after the call was sent: it may or may not have been applied.
            details = "the worker connection was lost mid-call; retry with the same idempotency key"
        await context.abort(error.code(), details, tuple(trailers))


def _transport_failure(error: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE that no worker answered (workers stamp every status they send with x-paygate-worker)."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and _first(error.trailing_metadata(), WORKER_HEADER) is None


def _translate(error: Exception, request_id: str) -> PaygateError:
    if isinstance(error, redis.RedisError):
        log.warning("redis unavailable: %s", type(error).__name__)
        return Unavailable("the nonce store (Redis) is unreachable; the call was not applied — retry shortly")
    if isinstance(error, (SQLAlchemyError, ConfigurationError)):
        log.error("key store unavailable: %s", error)
        return Unavailable("the key store is unavailable; the call was not applied — retry shortly")
    log.exception("unexpected gateway failure")
    return PaygateError(f"internal error; report request id {request_id}")


def _first(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key and isinstance(v, str):
            return v
    return None


def _request_id(metadata: tuple[Any, ...]) -> str:
    given = _first(metadata, REQUEST_ID_HEADER)
    if given and REQUEST_ID_PATTERN.match(given):
        return given
    return new_id("req")


class GatewayHandler(grpc.GenericRpcHandler):
    """Routes every known `PaymentGateway` method to the forwarder; unknown methods get UNIMPLEMENTED."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._handlers = {
            path: grpc.unary_unary_rpc_method_handler(forwarder.handler_for(path)) for path in METHOD_PATHS
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


async def run_gateway(settings: Settings, worker_addresses: list[str], metrics_listen: str | None = None) -> None:
    registry = process_registry()
    metrics = GatewayMetrics.create(registry)
    if metrics_listen:
        serve_metrics(metrics_listen, registry)
    database = Database(settings.effective_database_url(), pool_size=4)
    keystore = KeyStore(database, load_master_key(settings, create=True))
    redis_client = connect_async(settings.effective_redis_url())
    authenticator = Authenticator(
        KeyCache(keystore, settings.key_cache_ttl_s),
        redis_client,
        settings.redis_prefix,
        timestamp_skew_s=settings.timestamp_skew_s,
        nonce_ttl_s=settings.nonce_ttl_s,
    )
    health_servicer = health.aio.HealthServicer()

    ready_marker = settings.run_dir / "gateway.ready"
    listening = False

    def mark_ready() -> None:
        # Tells `paygate serve` (and scripts) that calls can succeed: we listen and have a healthy worker.
        if listening and ready_marker.parent.is_dir():
            ready_marker.write_text(settings.listen)

    def on_pool_change(any_healthy: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if any_healthy else health_pb2.HealthCheckResponse.NOT_SERVING
        if any_healthy:
            mark_ready()
        for name in ("", SERVICE_NAME):
            asyncio.get_running_loop().create_task(health_servicer.set(name, status))

    pool = WorkerPool(
        worker_addresses, health_interval_s=settings.health_interval_s, metrics=metrics, on_change=on_pool_change
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await pool.start()

    server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=4096)
    server.add_generic_rpc_handlers((GatewayHandler(Forwarder(authenticator, pool, metrics)),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind(server, settings.listen)
    await server.start()
    listening = True
    if any(e.healthy for e in pool.endpoints):
        mark_ready()
    log.info("gateway serving", extra={"fields": {"listen": settings.listen, "workers": worker_addresses}})

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("gateway draining")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)  # stop accepting; let in-flight calls finish
    await pool.close()
    await redis_client.aclose()
    database.dispose()
    log.info("gateway stopped")
