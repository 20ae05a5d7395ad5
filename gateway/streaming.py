"""Server-streaming methods through the gateway (StreamEvents; docs/events.md, "Streaming").

The call is checked exactly like a unary one — signature over the one request message, scope, nonce — and then
relayed: the worker's messages pass through as bytes, one by one, as they come. A stream holds a worker for as long
as it lasts, so streams have their own bound (`max_event_streams` per gateway) instead of the unary calls'
in-flight bound. The caller cancelling ends the worker's call too (the relay's task is cancelled, and so is the
call it awaits). A worker that goes away mid-stream ends the stream with UNAVAILABLE: the caller calls again with
the last event it received, and another worker carries on from there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from gateway.access_log import CallNotes
from gateway.metadata import first, request_id_of, worker_trailers
from gateway.routing import WorkerPool, never_delivered
from paygate.scopes import SERVICE_NAME
from paygate.signing import CALLER_KEY_HEADER, OWNER_HEADER, REQUEST_ID_HEADER, WORKER_HEADER
from runtime import logs
from runtime.errors import PaygateError, ResourceExhausted, Unavailable, to_rpc_status
from runtime.metrics import GatewayMetrics

if TYPE_CHECKING:
    from gateway.server import Forwarder

StreamHandler = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[None]]
_WORKER_LOST = "the stream's worker went away; call StreamEvents again with the last event_id you received"


class StreamRelay:
    def __init__(
        self,
        forwarder: Forwarder,
        pool: WorkerPool,
        metrics: GatewayMetrics,
        *,
        max_streams: int,
    ) -> None:
        self._forwarder = forwarder
        self._pool = pool
        self._metrics = metrics
        self._max_streams = max_streams
        self._active = 0
        self._calls: set[grpc.aio.UnaryStreamCall] = set()

    def close(self) -> None:
        """The gateway is stopping: every stream ends now with UNAVAILABLE (its caller resumes elsewhere)."""
        for call in list(self._calls):
            call.cancel()

    def handler_for(self, path: str) -> StreamHandler:
        labels = ("server_stream", SERVICE_NAME, path.rsplit("/", 1)[-1])

        async def handle(_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            started = time.perf_counter()
            self._metrics.started.labels(*labels).inc()
            metadata = tuple(context.invocation_metadata() or ())
            request_id = request_id_of(metadata)
            notes = CallNotes()
            try:
                await self._relay(path, context, metadata, request_id, notes)
            finally:
                # A stream has no end of its own: it ends with a refusal (its code is set) or when its caller leaves.
                code = context.code() or grpc.StatusCode.CANCELLED
                elapsed_s = time.perf_counter() - started
                self._metrics.handled.labels(*labels, code.name).inc()
                self._metrics.handling_seconds.labels(*labels).observe(elapsed_s)
                self._forwarder.access.call(path, code, elapsed_s, request_id, context, metadata, notes)

        return handle

    async def _relay(
        self, path: str, context: grpc.aio.ServicerContext, metadata: tuple[Any, ...], request_id: str, notes: CallNotes
    ) -> None:
        logs.request_id_var.set(request_id)
        counted = False
        try:
            caller, body = await self._forwarder.authenticate(path, metadata, context, request_id)
            notes.key_id, notes.owner = caller.key_id, caller.owner
            if self._active >= self._max_streams:
                raise ResourceExhausted(
                    f"the gateway serves its maximum of {self._max_streams} event streams; retry after the delay",
                    reason="TOO_MANY_STREAMS",
                    retry_after_ms=1000,
                )
            self._active += 1
            counted = True
            forward = (
                (OWNER_HEADER, caller.owner),
                (CALLER_KEY_HEADER, caller.key_id),
                (REQUEST_ID_HEADER, request_id),
            )
            for endpoint in self._pool.rotation():
                call = endpoint.stream_method(path)(body, metadata=forward, timeout=context.time_remaining())
                self._calls.add(call)
                try:
                    await self._pass_through(call, context, request_id, notes)
                except grpc.aio.AioRpcError:  # only a call that provably never reached the worker gets here
                    self._pool.mark_unhealthy(endpoint, "connect failed")
                finally:
                    self._calls.discard(call)
                    call.cancel()  # no-op once it has ended; ends the worker's side when our caller left
            raise Unavailable("no worker can serve right now; retry shortly")
        except PaygateError as error:
            status = to_rpc_status(error)
            await context.abort(
                status.code, status.details, (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id))
            )
            raise  # unreachable: abort raises
        finally:
            if counted:
                self._active -= 1

    async def _pass_through(
        self, call: grpc.aio.UnaryStreamCall, context: grpc.aio.ServicerContext, request_id: str, notes: CallNotes
    ) -> None:
        """Relay one worker's stream until it ends; an AioRpcError escapes only if the call never reached it."""
        headers = await call.initial_metadata()
        worker = first(headers, WORKER_HEADER)
        if worker is None:  # the call ended before any header: reading raises its status
            try:
                await call.read()
            except grpc.aio.AioRpcError as error:
                if never_delivered(error):
                    raise
                await self._end_like(error, context, request_id)
            raise Unavailable(_WORKER_LOST)
        notes.worker = worker
        await context.send_initial_metadata(((WORKER_HEADER, worker), (REQUEST_ID_HEADER, request_id)))
        try:
            async for message in call:
                await context.write(message)
        except grpc.aio.AioRpcError as error:
            await self._end_like(error, context, request_id)
        raise Unavailable(_WORKER_LOST)  # a worker's stream has no end of its own

    @staticmethod
    async def _end_like(error: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext, request_id: str) -> None:
        """The worker's own status (a refusal, its shutdown) passes through; a broken connection is UNAVAILABLE."""
        if first(error.trailing_metadata(), WORKER_HEADER) is None:
            raise Unavailable(_WORKER_LOST) from None
        await context.abort(error.code(), error.details() or "", worker_trailers(error, request_id))
