"""The workers' internal gRPC service: what other processes of the stack (not callers) hand to workers.

`Apply` takes a provider callback the notifications edge has stored and answers what to send back to the
provider. Its messages are small JSON documents rather than protobuf: the service is private to one stack (the
gateway never forwards it: it serves only `paygate.v1.PaymentGateway`), both ends are in this repository, and
its contract is these two functions (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from runtime.errors import FieldViolation, InvalidArgument, PaygateError, to_rpc_status
from runtime.grpc_server import SERVER_OPTIONS, bind
from runtime.tls import NOTIFY_EDGE_PEER_NAME, peer_check
from workers.channels.base import HttpReply
from workers.domain.types import Method
from workers.operations import notifications
from workers.service import PaymentService

SERVICE = "paygate.internal.v1.Notifications"
APPLY_PATH = f"/{SERVICE}/Apply"


def encode_request(channel: str, notification_id: int) -> bytes:
    return json.dumps({"channel": channel, "notification_id": notification_id}).encode()


def decode_reply(raw: bytes) -> HttpReply:
    data = json.loads(raw)
    return HttpReply(int(data["status"]), dict(data["headers"]), base64.b64decode(data["body"]))


def _encode_reply(reply: HttpReply) -> bytes:
    return json.dumps(
        {"status": reply.status, "headers": dict(reply.headers), "body": base64.b64encode(reply.body).decode()}
    ).encode()


def _decode_request(raw: bytes) -> tuple[Method, int]:
    try:
        data: dict[str, Any] = json.loads(raw)
        return Method(data["channel"]), int(data["notification_id"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument([FieldViolation("request", f"not an Apply request: {type(error).__name__}")]) from None


def generic_handler(service: PaymentService, executor: ThreadPoolExecutor) -> grpc.GenericRpcHandler:
    async def apply(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            method, notification_id = _decode_request(body)
            run = contextvars.copy_context().run
            reply = await asyncio.get_running_loop().run_in_executor(
                executor, run, notifications.handle, service.context, method, notification_id
            )
            return _encode_reply(reply)
        except PaygateError as error:
            status = to_rpc_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise  # unreachable

    handler = grpc.unary_unary_rpc_method_handler(apply)  # bytes in, bytes out
    return grpc.method_handlers_generic_handler(SERVICE, {"Apply": handler})


async def serve(
    address: str | None,
    service: PaymentService,
    executor: ThreadPoolExecutor,
    credentials: grpc.ServerCredentials | None,
) -> grpc.aio.Server | None:
    """The internal service (provider callbacks from the notification edge) on its own address, so that the edge —
    the one process facing the internet — can reach nothing else of a worker: not the PaymentGateway service,
    whose caller identity workers take on trust from gateways. With mutual TLS it admits only the edge's
    certificate (docs/security.md). Without an address the worker takes no callbacks (providers retry; the
    janitor still settles by query)."""
    if not address:
        return None
    server = grpc.aio.server(
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=256,
        interceptors=peer_check(credentials, NOTIFY_EDGE_PEER_NAME),
    )
    server.add_generic_rpc_handlers((generic_handler(service, executor),))
    bind(server, address, credentials)
    await server.start()
    return server
