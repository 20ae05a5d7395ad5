"""An unauthenticated client cannot take the gateway's capacity (docs/architecture.md, "Calls that never finish").

The attack that used to work: about 4,200 unsigned streams over 8 HTTP/2 connections, each sending headers and
end-of-stream but no request message and no deadline, held every concurrent-call slot; good signed calls and
the health check got RESOURCE_EXHAUSTED. Here the same attack, and two harder variants, run for real against
`paygate serve` while good signed calls and health checks keep succeeding; every attack call is ended by the
gateway with a documented status.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygate import signing
from paygate.client import PaygateClient
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack

CONNECTIONS = 8
ATTACK_STREAMS = 4_200
READ_TIMEOUT_S = 2
PATH = method_path("GetBalance")


@pytest.fixture(scope="module")
def flood_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(
        Path(tmp_path_factory.mktemp("flood")),
        workers=2,
        # Small pending-call bounds, so that this attack exercises both (oldest-first eviction per connection and
        # in total) as well as the read timeout and HTTP/2's per-connection stream limit.
        extra_env={
            "PAYGATE_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "PAYGATE_MAX_PENDING_CALLS_PER_CONNECTION": "60",
            "PAYGATE_MAX_PENDING_CALLS": "300",
        },
    )
    yield stack
    stack.stop()


def _connection(stack: Stack, index: int) -> grpc.aio.Channel:
    # Distinct channel arguments and a local subchannel pool: each channel is its own HTTP/2 connection.
    return grpc.aio.insecure_channel(
        stack.listen, options=[("grpc.use_local_subchannel_pool", 1), ("paygate.test.connection", index)]
    )


async def _no_message() -> AsyncIterator[bytes]:
    """Headers, then end-of-stream: no request message at all."""
    for _ in ():
        yield b""


async def _never_sends(stop: asyncio.Event) -> AsyncIterator[bytes]:
    """Headers, and then nothing: neither a message nor end-of-stream, until the test ends."""
    await stop.wait()
    for _ in ():
        yield b""


def _forged(key_id: str) -> list[tuple[str, str]]:
    """Well-formed signature headers for a real key id, with a signature nobody computed."""
    return [
        (signing.KEY_ID_HEADER, key_id),
        (signing.TIMESTAMP_HEADER, str(int(time.time()))),
        (signing.NONCE_HEADER, signing.new_nonce()),
        (signing.SIGNATURE_HEADER, secrets.token_hex(32)),
    ]


DETAILS: dict[str, str] = {}


async def _status(call: grpc.aio.StreamUnaryCall) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        DETAILS.setdefault(error.code().name, f"{error.details()} | {error.debug_error_string()}")
        return error.code()
    return grpc.StatusCode.OK


def _good_calls(stack: Stack, key: tuple[str, str], rounds: int) -> Counter[str]:
    """Signed reads and top-ups and health checks from another client (its own thread, connection and gRPC
    stack, as an honest service would be), while the attack runs."""
    outcomes: Counter[str] = Counter()
    with PaygateClient(stack.listen, *key, timeout_s=30) as client, grpc.insecure_channel(stack.listen) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for index in range(rounds):
            user = f"good-{uuid.uuid4().hex[:8]}"
            read = pb.GetBalanceRequest(user_id=user, currency="CNY")
            write = pb.TopUpRequest(order_id=f"o-{user}", user_id=user, amount_minor=1, currency="CNY", method=6)
            for method, request in (("GetBalance", read), ("TopUp", write)):
                try:
                    client.call(method, request, pb.Payment if method == "TopUp" else pb.Balance)
                    outcomes[f"{method} OK"] += 1
                except grpc.RpcError as error:
                    outcomes[f"{method} {error.code().name}: {error.details()}"] += 1
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            outcomes[f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"] += 1
            time.sleep(0.05 if index % 5 else 0.2)  # spread over the attack's life
    return outcomes


async def _attack(stack: Stack, key: tuple[str, str], variant: str) -> tuple[Counter[str], Counter[str]]:
    stop = asyncio.Event()
    DETAILS.clear()
    channels = [_connection(stack, i) for i in range(CONNECTIONS)]
    calls = []
    for index in range(ATTACK_STREAMS):
        channel = channels[index % CONNECTIONS]
        if variant == "unsigned, end-of-stream, no message":
            call = channel.stream_unary(PATH)(_no_message())
        elif variant == "unsigned, never half-closed":
            call = channel.stream_unary(PATH)(_never_sends(stop))
        else:  # forged headers for a real key id, never half-closed: the calls that reach the pending stage
            call = channel.stream_unary(PATH)(_never_sends(stop), metadata=_forged(key[0]))
        calls.append(call)
    await asyncio.sleep(0.5)  # let the streams open before the good calls start
    good = await asyncio.to_thread(_good_calls, stack, key, 20)
    ended = await asyncio.wait_for(asyncio.gather(*(_status(call) for call in calls)), timeout=120)
    stop.set()
    for channel in channels:
        await channel.close()
    return good, Counter(code.name for code in ended)


# Streams beyond a connection's HTTP/2 limit are refused by gRPC itself (REFUSED_STREAM: UNAVAILABLE, "Stream
# removed"), which any variant may see; everything else is ended by the gateway's own rules.
REFUSED_STREAM = "UNAVAILABLE"
EXPECTED = {
    # refused from the headers at once, before any body is awaited
    "unsigned, end-of-stream, no message": {"UNAUTHENTICATED", REFUSED_STREAM},
    "unsigned, never half-closed": {"UNAUTHENTICATED", REFUSED_STREAM},
    # ended by the pending-call bounds (oldest first) or the read timeout
    "forged headers, never sends the body": {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", REFUSED_STREAM},
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_the_flood_cannot_deny_service_to_signed_calls(flood_stack: Stack, variant: str) -> None:
    key = flood_stack.create_key(f"flood-{uuid.uuid4().hex[:6]}")
    good, attack = asyncio.run(_attack(flood_stack, key, variant))
    print(f"{variant}: good calls {dict(good)}; attack calls ended with {dict(attack)}")
    assert good == Counter({"GetBalance OK": 20, "TopUp OK": 20, "health SERVING": 20})
    assert sum(attack.values()) == ATTACK_STREAMS
    assert set(attack) <= EXPECTED[variant], attack
    assert sum(n for code, n in attack.items() if code != REFUSED_STREAM) > 0  # the gateway's own rules ended some
    if REFUSED_STREAM in attack:
        assert "RST_STREAM with error code 7" in DETAILS[REFUSED_STREAM]  # REFUSED_STREAM, nothing else


def test_forged_headers_with_end_of_stream_and_no_message_are_invalid_argument(flood_stack: Stack) -> None:
    key_id, _ = flood_stack.create_key("flood-eos")

    async def one() -> tuple[grpc.StatusCode, str]:
        async with grpc.aio.insecure_channel(flood_stack.listen) as channel:
            try:
                await channel.stream_unary(PATH)(_no_message(), metadata=_forged(key_id), timeout=30)
            except grpc.aio.AioRpcError as error:
                return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    code, message = asyncio.run(one())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly one request message" in message
