"""The gateway process: verify, pick a healthy worker, forward the raw request bytes (docs/architecture.md,
"The gateway").

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from gateway import reflection
from gateway.admission import Admission
from gateway.auth import RATE_LIMIT_REASONS, AuthenticatedCaller, Authenticator, AuthFailure, KeyCache
from gateway.key_usage import KeyUsage
from gateway.keystore import KeyStore, load_master_key
from gateway.metadata import first, request_id_of, worker_trailers
from gateway.routing import WorkerPool, never_delivered
from gateway.streaming import StreamRelay
from paygate.scopes import READ_ONLY_PATHS, SERVICE_NAME, STREAMING_PATHS, UNARY_PATHS
from paygate.signing import CALLER_KEY_HEADER, OWNER_HEADER, REQUEST_ID_HEADER, WORKER_HEADER
from runtime import logs, process_metrics
from runtime.db import Database
from runtime.errors import (
    CallDeadlineExceeded,
    ConfigurationError,
    FieldViolation,
    InvalidArgument,
    PaygateError,
    PermissionDenied,
    RequestTimeout,
    ResourceExhausted,
    Unavailable,
    to_rpc_status,
)
from runtime.grpc_server import SERVER_OPTIONS, bind
from runtime.metrics import GatewayMetrics, process_registry, serve_metrics
from runtime.redis_ha import describe_error
from runtime.redis_support import connect_async
from runtime.settings import Settings
from runtime.tls import public_server_credentials

log = logging.getLogger(__name__)

CORE_PENDING_REQUESTS = 10_000

# How a call whose caller cancelled (or whose connection went away) ends in its handler: the task is cancelled at
# its next await, or sending the status fails (a read may first return EOF, as if the caller had half-closed). gRPC
# ends the call; the handler only has to count it as CANCELLED rather than as the refusal it could not send.
_CALLER_GONE = (asyncio.CancelledError, grpc.aio.InternalError)

Handler = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[bytes]]


@dataclass(frozen=True)
class MethodSeries:
    """One method's metric children, looked up once (a `labels()` call costs a lock and a tuple per call)."""

    labels: tuple[str, str, str]
    started: Any
    seconds: Any
    handled_ok: Any
    metrics: GatewayMetrics

    @classmethod
    def of(cls, metrics: GatewayMetrics, method: str) -> MethodSeries:
        labels = ("unary", SERVICE_NAME, method)
        return cls(
            labels,
            metrics.started.labels(*labels),
            metrics.handling_seconds.labels(*labels),
            metrics.handled.labels(*labels, grpc.StatusCode.OK.name),
            metrics,
        )

    def handled(self, code: grpc.StatusCode) -> Any:
        return self.handled_ok if code is grpc.StatusCode.OK else self.metrics.handled.labels(*self.labels, code.name)


class Forwarder:
    def __init__(
        self, authenticator: Authenticator, pool: WorkerPool, metrics: GatewayMetrics, admission: Admission
    ) -> None:
        self._auth = authenticator
        self._pool = pool
        self._metrics = metrics
        self._admission = admission
        self._ok_by_address: dict[str, Any] = {}  # label children are looked up once, not per call

    def handler_for(self, path: str) -> Handler:
        series = MethodSeries.of(self._metrics, path.rsplit("/", 1)[-1])

        async def handle(_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            return await self.forward(path, series, context)

        return handle

    async def forward(self, path: str, series: MethodSeries, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        series.started.inc()
        metadata = tuple(context.invocation_metadata() or ())
        request_id = request_id_of(metadata)
        logs.request_id_var.set(request_id)
        code = grpc.StatusCode.OK
        entered: AuthenticatedCaller | None = None
        try:
            caller, body = await self.authenticate(path, metadata, context, request_id)
            self._admission.enter(caller, self._metrics)
            entered = caller
            forward_metadata = (
                (OWNER_HEADER, caller.owner),
                (CALLER_KEY_HEADER, caller.key_id),
                (REQUEST_ID_HEADER, request_id),
            )
            timeout = self._admission.timeout_s(context.time_remaining())
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
                    await self._relay_error(error, request_id, context, timeout)
                    raise  # unreachable: abort raises
                self._forwarded_ok(endpoint.address).inc()
                worker = first(await call.trailing_metadata(), WORKER_HEADER) or endpoint.address
                context.set_trailing_metadata(((WORKER_HEADER, worker), (REQUEST_ID_HEADER, request_id)))
                return response
            raise Unavailable("no worker can serve right now; retry shortly (the call was not applied)")
        except PaygateError as error:
            code = error.code
            status = to_rpc_status(error)
            try:
                await context.abort(
                    status.code, status.details, (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id))
                )
            except _CALLER_GONE:
                code = grpc.StatusCode.CANCELLED
                raise
            raise  # unreachable
        except _CALLER_GONE:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if entered is not None:
                self._admission.leave(entered)
            series.handled(code).inc()
            series.seconds.observe(time.perf_counter() - started)

    def _forwarded_ok(self, address: str) -> Any:
        counter = self._ok_by_address.get(address)
        if counter is None:
            counter = self._ok_by_address[address] = self._metrics.forwarded.labels(address, "ok")
        return counter

    async def authenticate(
        self, path: str, metadata: tuple[Any, ...], context: grpc.aio.ServicerContext, request_id: str
    ) -> tuple[AuthenticatedCaller, bytes]:
        """Headers first (an unsigned or unknown caller is refused before any body is awaited), then the body
        within the read timeout and the pending-call bounds, then the signature over it."""
        try:
            try:
                checked = await self._auth.check_headers(metadata)
                body = await self._receive(context)  # its own refusals are counted by the pending bounds
                return await self._auth.verify_body(path, checked, body), body
            except AuthFailure as failure:
                self._metrics.auth_failures.labels(failure.rule).inc()
                raise
            except PermissionDenied as denied:
                self._metrics.auth_failures.labels(denied.reason.lower()).inc()
                raise
            except ResourceExhausted as limited:
                if limited.reason in RATE_LIMIT_REASONS:  # a key's rate limits (gateway/auth.py)
                    self._metrics.admission_refusals.labels(limited.reason.lower()).inc()
                raise
        except PaygateError:
            raise
        except Exception as error:  # Redis or the key store: the one boundary for foreign errors here
            raise _translate(error, request_id) from None

    async def _receive(self, context: grpc.aio.ServicerContext) -> bytes:
        """Exactly one request message, complete (half-closed) within the read timeout, as a bounded pending call."""
        pending = self._admission.pending
        ticket = pending.enter(context.peer() or "unknown")
        try:
            async with asyncio.timeout(self._admission.read_timeout_s):
                body = await context.read()
                if body is grpc.aio.EOF:
                    raise _one_message("no request message was sent")
                if await context.read() is not grpc.aio.EOF:
                    raise _one_message("more than one request message was sent")
            return bytes(body)
        except TimeoutError:
            self._metrics.admission_refusals.labels("read_timeout").inc()
            raise RequestTimeout(
                f"the request message did not arrive complete within {self._admission.read_timeout_s:g} s of the "
                "call's headers; send the whole request at once (the call was not applied)"
            ) from None
        except asyncio.CancelledError:
            if not pending.was_evicted(ticket):
                raise  # the caller cancelled
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise ResourceExhausted(
                "too many calls were waiting for their request messages; this one waited longest and was ended "
                "without being applied — send each request at once and retry",
                reason="TOO_MANY_PENDING_CALLS",
                retry_after_ms=100,
            ) from None
        finally:
            pending.leave(ticket)

    @staticmethod
    async def _relay_error(
        error: grpc.aio.AioRpcError, request_id: str, context: grpc.aio.ServicerContext, timeout_s: float
    ) -> None:
        """Pass a worker's status through unchanged, rich details (grpc-status-details-bin) included."""
        details = error.details() or ""
        if (
            error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            and first(error.trailing_metadata(), WORKER_HEADER) is None
        ):
            raise CallDeadlineExceeded(
                f"the call did not finish within its deadline of {timeout_s:g} s (the caller's, or the gateway's "
                "default or cap); it may have been applied — retry with the same idempotency key"
            )
        if _transport_failure(error):
            # The connection broke after the call was sent: it may or may not have been applied.
            details = "the worker connection was lost mid-call; retry with the same idempotency key"
        await context.abort(error.code(), details, worker_trailers(error, request_id))


def _one_message(what: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("request", f"a unary method takes exactly one request message; {what}")])


def _transport_failure(error: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE that no worker answered (workers stamp every status they send with x-paygate-worker)."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and first(error.trailing_metadata(), WORKER_HEADER) is None


def _translate(error: Exception, request_id: str) -> PaygateError:
    if isinstance(error, redis.RedisError):
        log.warning("redis unavailable: %s", describe_error(error))
        return Unavailable("the nonce store (Redis) is unreachable; the call was not applied — retry shortly")
    if isinstance(error, (SQLAlchemyError, ConfigurationError)):
        log.error("key store unavailable: %s", error)
        return Unavailable("the key store is unavailable; the call was not applied — retry shortly")
    log.exception("unexpected gateway failure")
    return PaygateError(f"internal error; report request id {request_id}")


class GatewayHandler(grpc.GenericRpcHandler):
    """Routes every known `PaymentGateway` method to the forwarder; unknown methods get UNIMPLEMENTED."""

    def __init__(self, forwarder: Forwarder, relay: StreamRelay) -> None:
        # Stream-unary handlers without (de)serializers: gRPC calls them as soon as a call's headers arrive (a
        # unary handler is only called once the message is there — never, for a call that half-closes without
        # one), so the gateway controls the whole life of every call. On the wire a unary call is unchanged.
        self._handlers = {
            path: grpc.stream_unary_rpc_method_handler(forwarder.handler_for(path)) for path in UNARY_PATHS
        }
        for path in STREAMING_PATHS:  # gateway/streaming.py
            self._handlers[path] = grpc.stream_stream_rpc_method_handler(relay.handler_for(path))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def _server_options(settings: Settings) -> list[tuple[str, Any]]:
    """No server-wide maximum_concurrent_rpcs: it counted calls that had not presented a request yet, so they
    could take every slot (health checks included). The admission bounds apply instead, and HTTP/2 caps the
    streams of one connection."""
    return [
        *SERVER_OPTIONS,
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # gRPC refuses a larger request itself, before any handler runs (docs/security.md, "Rate limits and quotas").
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # gRPC core queues calls that arrived before the server asked for them and, past 1,000 queued, starts
        # shedding new ones at random (CANCELLED) — honest calls included. Every call is cheap to take from the
        # queue here (an unsigned one is refused from its headers), so the queue may be deeper than a burst.
        ("grpc.server.max_pending_requests", CORE_PENDING_REQUESTS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * CORE_PENDING_REQUESTS),
    ]


def _authenticator(settings: Settings, keystore: KeyStore, client: Any, usage: KeyUsage) -> Authenticator:
    return Authenticator(
        KeyCache(keystore, settings.key_cache_ttl_s),
        client,
        settings.redis_prefix,
        timestamp_skew_s=settings.timestamp_skew_s,
        nonce_ttl_s=settings.nonce_ttl_s,
        defaults=settings,
        on_verified=usage.note,
    )


async def run_gateway(settings: Settings, worker_addresses: list[str], metrics_listen: str | None = None) -> None:
    # Read first: a missing or mismatched certificate (or none in production) stops the start (docs/security.md).
    public_credentials = public_server_credentials(settings)
    registry = process_registry()
    process_metrics.start("gateway", registry)  # before the database and Redis, so both are timed
    metrics = GatewayMetrics.create(registry)
    if metrics_listen:
        serve_metrics(metrics_listen, registry)
    database = Database(settings.effective_database_url(), pool_size=4)
    keystore = KeyStore(database, load_master_key(settings, create=True))
    redis_client = connect_async(settings.effective_redis_url())
    usage = KeyUsage(keystore, metrics.secret_used, settings.key_last_used_flush_s)
    authenticator = _authenticator(settings, keystore, redis_client, usage)
    usage_task = asyncio.create_task(usage.run())
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

    pool = WorkerPool.for_gateway(settings, worker_addresses, metrics, on_pool_change)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await pool.start()

    admission = Admission.of(settings, metrics)
    server = grpc.aio.server(options=_server_options(settings))
    forwarder = Forwarder(authenticator, pool, metrics, admission)
    relay = StreamRelay(forwarder, pool, metrics, max_streams=settings.max_event_streams)
    server.add_generic_rpc_handlers((GatewayHandler(forwarder, relay),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable(server)
    bind(server, settings.listen, public_credentials)
    await server.start()
    listening = True
    if any(e.healthy for e in pool.endpoints):
        mark_ready()
    tls = {"tls": public_credentials is not None, "workers_mtls": pool.mutual_tls}
    log.info("gateway serving", extra={"fields": {"listen": settings.listen, "workers": worker_addresses, **tls}})

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("gateway draining")
    await health_servicer.enter_graceful_shutdown()
    relay.close()
    await server.stop(settings.shutdown_grace_s)  # stop accepting; let in-flight calls finish
    await pool.close()
    usage_task.cancel()
    await asyncio.gather(usage_task, return_exceptions=True)
    await redis_client.aclose()
    database.dispose()
    log.info("gateway stopped")
