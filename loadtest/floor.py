"""The floor: Paygate's topology without Paygate's work, to measure what the stack costs above bare gRPC.

A grpc.aio pass-through proxy on a TCP port (the gateway's place) round-robins the raw request bytes of every
`paygate.v1.PaymentGateway` method — generic handlers, no (de)serializers, as gateway/server.py forwards — to two
grpc.aio echo processes on Unix sockets (the workers' place). Each echo answers every method at once with a
fixed, valid response message of that method's type, so a client can deserialize it exactly as it would a real
answer. The proxy checks no signature and the echoes touch no database or Redis: whatever a load generator gets
from here is the most that two Python gRPC hops on this machine can carry.

    from loadtest.floor import Floor
    with Floor(Path("/tmp/floor")) as floor:   # three spawned processes; stopped (SIGTERM) on exit
        print(floor.target)                    # 127.0.0.1:PORT

`stream_handlers=True` makes the proxy's handlers stream-unary, as the gateway's are (docs/decisions.md #27);
the default is plain unary handlers, the cheapest pass-through gRPC offers.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from loadtest.generator import RESPONSE_TYPES

SERVER_OPTIONS = [("grpc.so_reuseport", 0)]
FORWARD_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_FIXED_TIME = timestamp_pb2.Timestamp(seconds=1_790_000_000, nanos=123_000_000)


def sample_response(message_type: type[Message]) -> bytes:
    """A valid message of `message_type` with every singular field set (texts of a typical id's length, enums to
    their first real value, timestamps to a fixed time); repeated fields stay empty."""
    message = message_type()
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            setattr(message, field.name, f"{field.name}-0123456789abcdef"[:26])
        elif field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32):
            setattr(message, field.name, 12_345)
        elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            values = field.enum_type.values
            setattr(message, field.name, values[min(1, len(values) - 1)].number)
        elif field.message_type is not None and field.message_type.full_name == _FIXED_TIME.DESCRIPTOR.full_name:
            getattr(message, field.name).CopyFrom(_FIXED_TIME)
    return message.SerializeToString()


# -- the echo process --------------------------------------------------------------------------------------


class _EchoHandler(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self._handlers = {
            path: grpc.unary_unary_rpc_method_handler(_answer(sample_response(response_type)))
            for path, response_type in RESPONSE_TYPES.items()
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def _answer(response: bytes) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    async def answer(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return response

    return answer


async def _serve(server: grpc.aio.Server, address: str, ready: Connection) -> None:
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not listen on {address}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    ready.send(port)
    ready.close()
    await stopping.wait()
    await server.stop(1)


def _echo_main(socket_path: str, ready: Connection) -> None:
    async def main() -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((_EchoHandler(),))
        await _serve(server, f"unix:{socket_path}", ready)

    asyncio.run(main())


# -- the proxy process -------------------------------------------------------------------------------------


class _ProxyHandler(grpc.GenericRpcHandler):
    """Every method to the next backend in turn, bytes in and bytes out."""

    def __init__(self, channels: list[grpc.aio.Channel], stream_handlers: bool) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for path in RESPONSE_TYPES:
            callables = itertools.cycle([channel.unary_unary(path) for channel in channels])
            if stream_handlers:
                self._handlers[path] = grpc.stream_unary_rpc_method_handler(_forward_stream(callables))
            else:
                self._handlers[path] = grpc.unary_unary_rpc_method_handler(_forward(callables))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def _forward(callables: Any) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    async def forward(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        response: bytes = await next(callables)(request, timeout=FORWARD_TIMEOUT_S)
        return response

    return forward


def _forward_stream(
    callables: Any,
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[bytes]]:
    async def forward(_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        request = await context.read()
        if request is grpc.aio.EOF or await context.read() is not grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "exactly one request message")
        response: bytes = await next(callables)(request, timeout=FORWARD_TIMEOUT_S)
        return response

    return forward


def _proxy_main(listen: str, backends: list[str], stream_handlers: bool, ready: Connection) -> None:
    async def main() -> None:
        channels = [grpc.aio.insecure_channel(backend) for backend in backends]
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((_ProxyHandler(channels, stream_handlers),))
        await _serve(server, listen, ready)
        for channel in channels:
            await channel.close()

    asyncio.run(main())


# -- the parent's handle -----------------------------------------------------------------------------------


class Floor:
    """The proxy and its echo processes, spawned on `start()` and stopped on `stop()` (or as a context)."""

    def __init__(self, directory: Path, *, echoes: int = 2, stream_handlers: bool = False) -> None:
        self.directory = directory
        self.echoes = echoes
        self.stream_handlers = stream_handlers
        self.target = ""
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        sockets = [str(self.directory / f"echo-{n}.sock") for n in range(self.echoes)]
        try:
            for path in sockets:
                Path(path).unlink(missing_ok=True)
                self._spawn(_echo_main, path)
            port = self._spawn(_proxy_main, "127.0.0.1:0", [f"unix:{path}" for path in sockets], self.stream_handlers)
        except BaseException:
            self.stop()
            raise
        self.target = f"127.0.0.1:{port}"
        return self.target

    def _spawn(self, main: Callable[..., None], *args: Any) -> int:
        """Start one process and wait for it to listen; returns its port (0 for a Unix socket)."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=False)
        process = context.Process(target=main, args=(*args, theirs), daemon=True)
        process.start()
        self._processes.append(process)
        theirs.close()
        if not ours.poll(START_TIMEOUT_S):
            raise RuntimeError(f"a floor process ({main.__name__}) did not start within {START_TIMEOUT_S:g} s")
        try:
            return int(ours.recv())
        except EOFError:
            process.join(5)
            raise RuntimeError(f"a floor process ({main.__name__}) exited with {process.exitcode}") from None
        finally:
            ours.close()

    def stop(self) -> list[int | None]:
        """SIGTERM to every process (the proxy first), then wait; a process that does not end is killed."""
        codes: list[int | None] = []
        for process in reversed(self._processes):
            if process.is_alive():
                process.terminate()
        for process in reversed(self._processes):
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_S)
            codes.append(process.exitcode)
        self._processes.clear()
        return codes

    def __enter__(self) -> Floor:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
