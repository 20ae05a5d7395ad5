"""A worker process: a grpc.aio server for `paygate.v1.PaymentGateway` behind the gateway.

Servicers are thin: decode (parse the bytes, validate) → one service function → encode. Service functions are
synchronous (SQLAlchemy + redis-py) and run on a bounded thread pool so the event loop keeps accepting calls.
Workers trust the caller identity the gateway forwards (`x-paygate-owner`), so they listen on Unix sockets or on
addresses reachable only from the gateway.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from paygate.scopes import SERVICE_NAME
from paygate.signing import CALLER_KEY_HEADER, OWNER_HEADER, REQUEST_ID_HEADER, WORKER_HEADER
from paygate.v1 import payment_gateway_pb2 as pb
from runtime import logs, process_metrics
from runtime.db import Database
from runtime.errors import Unauthenticated, to_rpc_status
from runtime.grpc_server import SERVER_OPTIONS, bind
from runtime.metrics import WorkerMetrics, process_registry, serve_metrics
from runtime.redis_support import connect, connect_async
from runtime.settings import Settings
from runtime.tls import GATEWAY_PEER_NAME, peer_check, worker_server_credentials
from workers import internal
from workers.background import background_jobs
from workers.boundary import translate
from workers.codec import decode as validation
from workers.codec import encode as encoding
from workers.codec import wire
from workers.domain.types import Caller, CreatePaymentCommand, PaymentRecord
from workers.events.feed import EventFeed
from workers.events.stream import EventStreams
from workers.execution.group_commit import CommitterStopped
from workers.operations.purchase_batch import SinglePath
from workers.rpc_tables import extra_methods
from workers.service import PaymentService
from workers.webhooks.endpoints import Endpoints
from workers.wiring import build_relay, build_service, webhook_endpoints

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=Message)


def caller_from(context: grpc.aio.ServicerContext) -> Caller:
    metadata = dict(context.invocation_metadata() or ())
    owner = metadata.get(OWNER_HEADER)
    if not isinstance(owner, str) or not owner:
        raise Unauthenticated("workers serve only calls forwarded by the Paygate gateway")
    request_id = metadata.get(REQUEST_ID_HEADER)
    key_id = metadata.get(CALLER_KEY_HEADER)
    return Caller(
        owner=owner,
        key_id=key_id if isinstance(key_id, str) else "",
        request_id=request_id if isinstance(request_id, str) else "",
    )


class WorkerServicer:
    """`paygate.v1.PaymentGateway` as a table of methods: raw request bytes in, a response message out.

    Requests arrive as bytes (no deserializer registered), so a body that is not a valid message for the method
    — truncated, corrupt, bad UTF-8 — is the caller's INVALID_ARGUMENT, not an UNKNOWN error from inside gRPC.
    """

    def __init__(
        self,
        service: PaymentService,
        worker_id: str,
        executor: ThreadPoolExecutor,
        metrics: WorkerMetrics,
        *,
        inline_reads: bool = False,
        streams: EventStreams | None = None,
        webhooks: Endpoints | None = None,
    ) -> None:
        self._service = service
        self._streams = streams
        # On SQLite a point read is a local B-tree lookup of some tens of µs — less than the hop to the thread
        # pool and back costs — and WAL readers never wait for the writer, so GetBalance and GetPayment are
        # answered on the event loop (docs/benchmarks.md). On a database server a read is a network round trip.
        self._inline = frozenset({"GetBalance", "GetPayment"}) if inline_reads else frozenset()
        self._worker_id = worker_id
        self._executor = executor
        self._metrics = metrics
        # method → (request type, decode: parse result → command, work on the thread pool or None when the
        # decoded value is already the response: pure computations need no thread hop)
        self._methods: dict[str, tuple[type[Message], Callable[[Any], Any], Callable[[Caller, Any], Message] | None]]
        self._methods = {
            "TopUp": (
                pb.TopUpRequest,
                validation.top_up,
                lambda caller, command: encoding.payment(service.top_up(caller, command)),
            ),
            "CreatePayment": (
                pb.CreatePaymentRequest,
                validation.create_payment,
                lambda caller, command: encoding.payment(service.create_payment(caller, command)),
            ),
            "GetPayment": (
                pb.GetPaymentRequest,
                validation.get_payment,
                lambda caller, lookup: encoding.payment(service.get_payment(caller, lookup)),
            ),
            "GetBalance": (
                pb.GetBalanceRequest,
                validation.get_balance,
                lambda caller, query: encoding.balance(query, service.get_balance(query)),
            ),
            "RefundPayment": (
                pb.RefundPaymentRequest,
                validation.refund_payment,
                lambda caller, command: encoding.refund(service.refund_payment(caller, command)),
            ),
            "Transfer": (
                pb.TransferRequest,
                validation.transfer,
                lambda caller, command: encoding.transfer(service.transfer(caller, command)),
            ),
            "ListTransactions": (
                pb.ListTransactionsRequest,
                validation.list_transactions,
                lambda caller, query: encoding.transactions(service.list_transactions(caller, query)),
            ),
            "QuotePrice": (pb.QuotePriceRequest, lambda request: encoding.quote(validation.quote_price(request)), None),
        }
        self._methods.update(extra_methods(service, webhooks))

    def generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name),
                response_serializer=_serialize,  # no request_deserializer: bytes in
            )
            for name in self._methods
        }
        if self._streams is not None:
            handlers["StreamEvents"] = grpc.unary_stream_rpc_method_handler(
                self._stream_events, response_serializer=_serialize
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    async def _stream_events(self, body: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        """The owner's events, then live (workers/events/stream.py); a refusal ends the stream with its status."""
        assert self._streams is not None
        code = grpc.StatusCode.OK
        request_id = ""
        identity: tuple[tuple[str, str], ...] = ()
        try:
            caller = caller_from(context)
            request_id = caller.request_id
            logs.request_id_var.set(request_id)
            identity = ((WORKER_HEADER, self._worker_id), (REQUEST_ID_HEADER, request_id))
            await context.send_initial_metadata(identity)
            subscription = validation.stream_events(wire.parse(pb.StreamEventsRequest, body))
            async for message in self._streams.stream(caller, subscription):
                yield message
        except Exception as error:  # the wire boundary, as for unary calls
            domain_error = translate(error, request_id)
            code = domain_error.code
            status = to_rpc_status(domain_error)
            await context.abort(status.code, status.details, (*status.trailing_metadata, *identity))
        finally:
            self._metrics.requests.labels(self._worker_id, "StreamEvents", code.name).inc()

    def _handler(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        request_type, decode, work = self._methods[method]

        async def handle(body: bytes, context: grpc.aio.ServicerContext) -> Message:
            return await self._serve(method, context, lambda: decode(wire.parse(request_type, body)), work)

        return handle

    async def _serve(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        decode: Callable[[], Any],
        work: Callable[[Caller, Any], Message] | None,
    ) -> Message:
        """decode (parse + validate, on the event loop) → work (service + encode, on the thread pool).

        Decoding is cheap and pure, so bad input is refused without a thread hop (which costs ~0.15 ms of CPU,
        docs/benchmarks.md); only work that touches the database or Redis goes to the pool.
        """
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id = ""
        try:
            caller = caller_from(context)
            request_id = caller.request_id
            logs.request_id_var.set(request_id)
            context.set_trailing_metadata(((WORKER_HEADER, self._worker_id), (REQUEST_ID_HEADER, request_id)))
            command = decode()
            if work is None:
                return command  # a pure method: decoding computed the response
            if method == "CreatePayment":
                committed = await self._group_committed(caller, command)
                if committed is not None:
                    return committed
            if method in self._inline:
                return work(caller, command)
            run = contextvars.copy_context().run
            return await asyncio.get_running_loop().run_in_executor(self._executor, run, work, caller, command)
        except Exception as error:  # the wire boundary: everything leaves as a mapped status
            domain_error = translate(error, request_id)
            code = domain_error.code
            status = to_rpc_status(domain_error)
            # abort() replaces the trailing metadata, so the identifying entries go in with the status details.
            identity = ((WORKER_HEADER, self._worker_id), (REQUEST_ID_HEADER, request_id))
            await context.abort(status.code, status.details, (*status.trailing_metadata, *identity))
            raise  # unreachable: abort raises
        finally:
            self._metrics.requests.labels(self._worker_id, method, code.name).inc()
            self._metrics.handling_seconds.labels(self._worker_id, method).observe(time.perf_counter() - started)

    async def _group_committed(self, caller: Caller, command: CreatePaymentCommand) -> Message | None:
        """A wallet purchase goes from the event loop straight to the group committer (docs/ledger.md, "Group
        commit") and waits there without holding a thread of the pool; None when it is not one, or when its
        batch passed it on (then the pool runs it one at a time)."""
        future = self._service.submit_wallet_purchase(caller, command)
        if future is None:
            return None
        try:
            record = await future
        except (SinglePath, CommitterStopped):
            run = contextvars.copy_context().run
            single = self._service.wallet_purchase_one_at_a_time
            record = await asyncio.get_running_loop().run_in_executor(self._executor, run, single, caller, command)
        assert isinstance(record, PaymentRecord)
        return encoding.payment(record)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def _event_streams(
    settings: Settings, database: Database, executor: ThreadPoolExecutor, metrics: WorkerMetrics
) -> tuple[EventFeed, EventStreams]:
    """StreamEvents (docs/events.md): the feed hears every commit that wrote events, here and in the other
    workers (over Redis), and wakes the streams this worker serves."""
    feed = EventFeed(
        connect(settings.effective_redis_url()),
        connect_async(settings.effective_redis_url()),
        settings.redis_prefix,
        poll_s=settings.events_poll_s,
    )
    await feed.start()
    database.on_events = feed.committed
    streams = EventStreams(
        database,
        feed,
        executor,
        metrics,
        heartbeat_s=settings.events_heartbeat_s,
        max_streams=settings.max_event_streams,
    )
    return feed, streams


async def run_worker(
    settings: Settings,
    worker_id: str,
    address: str,
    metrics_listen: str | None = None,
    internal_address: str | None = None,
) -> None:
    # Mutual TLS under the internal CA, only the gateway's certificate may call (docs/security.md); read first.
    credentials = worker_server_credentials(settings)
    registry = process_registry()
    process_metrics.start(process_metrics.worker_process(worker_id), registry)  # before the database and Redis
    metrics = WorkerMetrics.create(registry)
    metrics.jobs.declare()
    if metrics_listen:
        serve_metrics(metrics_listen, registry)
    database = Database(settings.effective_database_url(), pool_size=settings.worker_threads)
    executor = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix=f"{worker_id}-svc")
    service = build_service(settings, database, metrics)
    feed, streams = await _event_streams(settings, database, executor, metrics)
    relay = build_relay(settings, database, service, metrics)

    server = grpc.aio.server(
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=1024 + settings.max_event_streams,
        interceptors=peer_check(credentials, GATEWAY_PEER_NAME),
    )
    servicer = WorkerServicer(
        service,
        worker_id,
        executor,
        metrics,
        inline_reads=database.dialect == "sqlite",
        streams=streams,
        webhooks=webhook_endpoints(settings, database),
    )
    server.add_generic_rpc_handlers((servicer.generic_handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind(server, address, credentials)
    await server.start()
    internal_server = await internal.serve(internal_address, service, executor, credentials)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    fields = {"worker": worker_id, "address": address, "internal_address": internal_address or "none"}
    log.info("worker serving", extra={"fields": {**fields, "mutual_tls": credentials is not None}})

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    jobs = background_jobs(settings, service, executor, feed, relay, stopping)
    await stopping.wait()
    streams.close()
    await asyncio.gather(*jobs)
    log.info("worker draining", extra={"fields": {"worker": worker_id}})
    await health_servicer.enter_graceful_shutdown()
    if internal_server is not None:
        await internal_server.stop(settings.shutdown_grace_s)
    await server.stop(settings.shutdown_grace_s)
    executor.shutdown(wait=True)
    feed.close()
    relay.close()
    service.close()
    database.dispose()
    log.info("worker stopped", extra={"fields": {"worker": worker_id}})
