"""An unauthenticated client cannot take the gateway's capacity (docs/architecture.md, "Calls that never finish").

The attack that used to work: about 4,200 unsigned streams over 8 HTTP/2 connections, each sending headers and
end-of-stream but no request message and no deadline, held every concurrent-call slot; good signed calls and
the health check got RESOURCE_EXHAUSTED. Here the same attack, and two harder variants, run for real against
`paygate serve` while good signed calls and health checks keep succeeding; every attack call is ended by the
gateway with a documented status and ErrorInfo reason, and the gateway's metrics count exactly what the attackers
saw. The remaining tests pin the other ways a call can fail to present exactly one request, and the separate bound
on authenticated calls in flight to workers.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack, wait_until

CONNECTIONS = 8
ATTACK_STREAMS = 4_200
READ_TIMEOUT_S = 2
MAX_FORWARDED_CALLS = 2
PATH = method_path("GetBalance")
OK = "OK"
# Streams beyond a connection's HTTP/2 limit are refused by gRPC itself (REFUSED_STREAM: UNAVAILABLE, "Stream
# removed", no ErrorInfo), which any variant may see; everything else is ended by the gateway's own rules.
REFUSED_STREAM = "UNAVAILABLE -"
UNSIGNED = "UNAUTHENTICATED UNAUTHENTICATED"
EVICTED = "RESOURCE_EXHAUSTED TOO_MANY_PENDING_CALLS +RetryInfo"
TIMED_OUT = "DEADLINE_EXCEEDED REQUEST_TIMEOUT"
AT_CAPACITY = "RESOURCE_EXHAUSTED GATEWAY_AT_CAPACITY +RetryInfo"
NOT_ONE_MESSAGE = "INVALID_ARGUMENT INVALID_ARGUMENT"


@pytest.fixture(scope="module")
def flood_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(
        Path(tmp_path_factory.mktemp("flood")),
        workers=2,
        # Small bounds, so that this module exercises each of them: oldest-first eviction per connection and in
        # total, the read timeout, HTTP/2's per-connection stream limit, and the in-flight bound (the flood's good
        # calls come one at a time from one client, so 2 in flight never refuses them; only the burst test does).
        extra_env={
            "PAYGATE_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "PAYGATE_MAX_PENDING_CALLS_PER_CONNECTION": "60",
            "PAYGATE_MAX_PENDING_CALLS": "300",
            "PAYGATE_MAX_FORWARDED_CALLS": str(MAX_FORWARDED_CALLS),
        },
    )
    yield stack
    stack.stop()


def _connection(stack: Stack, index: int) -> grpc.aio.Channel:
    # Distinct channel arguments and a local subchannel pool: each channel is its own HTTP/2 connection.
    return stack.aio_channel(options=[("grpc.use_local_subchannel_pool", 1), ("paygate.test.connection", index)])


async def _no_message() -> AsyncIterator[bytes]:
    """Headers, then end-of-stream: no request message at all."""
    for _ in ():
        yield b""


async def _never_sends(stop: asyncio.Event) -> AsyncIterator[bytes]:
    """Headers, and then nothing: neither a message nor end-of-stream, until the test ends."""
    await stop.wait()
    for _ in ():
        yield b""


async def _messages(bodies: list[bytes], then: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """These messages, then end-of-stream — or, with `then`, no end-of-stream until it is set."""
    for body in bodies:
        yield body
    if then is not None:
        await then.wait()


def _forged(key_id: str) -> list[tuple[str, str]]:
    """Well-formed signature headers for a real key id, with a signature nobody computed."""
    return [
        (signing.KEY_ID_HEADER, key_id),
        (signing.TIMESTAMP_HEADER, str(int(time.time()))),
        (signing.NONCE_HEADER, signing.new_nonce()),
        (signing.SIGNATURE_HEADER, secrets.token_hex(32)),
    ]


def _outcome(error: grpc.aio.AioRpcError) -> str:
    """`CODE REASON[ +RetryInfo]` from the status and its rich details (`-` when there is no ErrorInfo)."""
    reason, retry = "-", ""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = " +RetryInfo"
    return f"{error.code().name} {reason}{retry}"


DETAILS: dict[str, str] = {}


async def _ended(call: grpc.aio.StreamUnaryCall | grpc.aio.UnaryUnaryCall) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        outcome = _outcome(error)
        DETAILS.setdefault(outcome, f"{error.details()} | {error.debug_error_string()}")
        return outcome
    return OK


def _counter(stack: Stack, name: str, reason: str | None = None, **labels: str) -> float:
    """The sum of a counter's series with these labels in the stack's /metrics (0 before the first increment)."""
    wanted = {**labels, **({"reason": reason} if reason is not None else {})}
    total = 0.0
    for series, value in re.findall(rf"^{name}\{{(.*)\}} (\S+)$", stack.metrics_text(), re.MULTILINE):
        if wanted.items() <= dict(re.findall(r'(\w+)="([^"]*)"', series)).items():
            total += float(value)
    return total


def _good_calls(stack: Stack, key: tuple[str, str], rounds: int) -> Counter[str]:
    """Signed reads and top-ups and health checks from another client (its own thread, connection and gRPC
    stack, as an honest service would be), while the attack runs."""
    outcomes: Counter[str] = Counter()
    with stack.client(*key, timeout_s=30) as client, stack.channel() as channel:
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
    # No client deadline: whatever ends these calls is the gateway (the bound only stops a broken test).
    ended = await asyncio.wait_for(asyncio.gather(*(_ended(call) for call in calls)), timeout=120)
    stop.set()
    for channel in channels:
        await channel.close()
    return good, Counter(ended)


EXPECTED = {
    # refused from the headers at once, before any body is awaited
    "unsigned, end-of-stream, no message": {UNSIGNED, REFUSED_STREAM},
    "unsigned, never half-closed": {UNSIGNED, REFUSED_STREAM},
    # ended by the pending-call bounds (oldest first) or the read timeout
    "forged headers, never sends the body": {EVICTED, TIMED_OUT, REFUSED_STREAM},
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_the_flood_cannot_deny_service_to_signed_calls(flood_stack: Stack, variant: str) -> None:
    key = flood_stack.create_key(f"flood-{uuid.uuid4().hex[:6]}")
    counted = ("evicted_connection", "evicted_total", "read_timeout")
    before = {reason: _counter(flood_stack, "paygate_gateway_admission_refusals_total", reason) for reason in counted}
    missing_before = _counter(flood_stack, "paygate_auth_failures_total", "missing")

    good, attack = asyncio.run(_attack(flood_stack, key, variant))
    print(f"{variant}: good calls {dict(good)}; attack calls ended with {dict(attack)}")

    assert good == Counter({"GetBalance OK": 20, "TopUp OK": 20, "health SERVING": 20})
    assert sum(attack.values()) == ATTACK_STREAMS
    assert set(attack) <= EXPECTED[variant], (attack, DETAILS)
    assert sum(n for outcome, n in attack.items() if outcome != REFUSED_STREAM) > 0  # the gateway's rules ended some
    if REFUSED_STREAM in attack:
        assert "RST_STREAM with error code 7" in DETAILS[REFUSED_STREAM]  # REFUSED_STREAM, nothing else
    # The gateway's own account of the attack matches what the attackers saw, call for call.
    after = {reason: _counter(flood_stack, "paygate_gateway_admission_refusals_total", reason) for reason in counted}
    evicted = sum(after[reason] - before[reason] for reason in ("evicted_connection", "evicted_total"))
    assert evicted == attack[EVICTED]
    assert after["read_timeout"] - before["read_timeout"] == attack[TIMED_OUT]
    if variant.startswith("unsigned"):
        assert _counter(flood_stack, "paygate_auth_failures_total", "missing") - missing_before == attack[UNSIGNED]


def _one_call(stack: Stack, metadata: list[tuple[str, str]], requests: AsyncIterator[bytes]) -> tuple[str, str]:
    """One call as a raw stream (what a hostile client can send), ended by the gateway; outcome and message."""

    async def run() -> tuple[str, str]:
        async with stack.aio_channel() as channel:
            # The client deadline only stops a broken test; each case here is ended by the gateway well before it.
            call = channel.stream_unary(PATH)(requests, metadata=metadata, timeout=60)
            return await _ended(call), str(await call.details())

    return asyncio.run(run())


def test_forged_headers_with_end_of_stream_and_no_message_are_invalid_argument(flood_stack: Stack) -> None:
    key_id, _ = flood_stack.create_key("flood-eos")
    outcome, message = _one_call(flood_stack, _forged(key_id), _no_message())
    assert outcome == NOT_ONE_MESSAGE
    assert "exactly one request message; no request message was sent" in message


def test_a_second_request_message_is_invalid_argument(flood_stack: Stack) -> None:
    key_id, secret = flood_stack.create_key("flood-two")
    body = pb.GetBalanceRequest(user_id="two-messages", currency="CNY").SerializeToString()
    metadata = signing.signed_metadata(key_id, secret, PATH, body)
    outcome, message = _one_call(flood_stack, metadata, _messages([body, body]))
    assert outcome == NOT_ONE_MESSAGE
    assert "exactly one request message; more than one request message was sent" in message


def test_a_signed_request_that_never_half_closes_is_ended_and_its_nonce_stays_unused(flood_stack: Stack) -> None:
    key_id, secret = flood_stack.create_key("flood-open")
    body = pb.GetBalanceRequest(user_id="never-half-closed", currency="CNY").SerializeToString()
    metadata = signing.signed_metadata(key_id, secret, PATH, body)

    async def held_open() -> tuple[str, str]:
        stop = asyncio.Event()
        try:
            async with flood_stack.aio_channel() as channel:
                call = channel.stream_unary(PATH)(_messages([body], then=stop), metadata=metadata, timeout=60)
                return await _ended(call), str(await call.details())
        finally:
            stop.set()

    outcome, message = asyncio.run(held_open())
    assert outcome == TIMED_OUT  # the gateway's bound (reason REQUEST_TIMEOUT), not the client's own deadline
    assert f"within {READ_TIMEOUT_S} s" in message and "send the whole request at once" in message
    # The signature was never checked, so its nonce was not spent: the same signed request, sent properly, works.
    assert _one_call(flood_stack, metadata, _messages([body]))[0] == OK


def test_authenticated_calls_beyond_the_in_flight_bound_get_resource_exhausted_with_retry_info(
    flood_stack: Stack,
) -> None:
    key_id, secret = flood_stack.create_key("flood-burst")
    refused_before = _counter(flood_stack, "paygate_gateway_admission_refusals_total", "in_flight")

    async def burst(size: int) -> Counter[str]:
        async with flood_stack.aio_channel() as channel:
            calls = []
            for index in range(size):
                body = pb.GetBalanceRequest(user_id=f"burst-{index}", currency="CNY").SerializeToString()
                metadata = signing.signed_metadata(key_id, secret, PATH, body)
                calls.append(channel.unary_unary(PATH)(body, metadata=metadata, timeout=60))
            return Counter(await asyncio.gather(*(_ended(call) for call in calls)))

    # 64 honest calls at once against a bound of 2 in flight: some must wait their turn. Bounded attempts.
    seen: Counter[str] = Counter()
    for _ in range(20):
        seen += asyncio.run(burst(64))
        if seen[AT_CAPACITY]:
            break
    assert set(seen) <= {OK, AT_CAPACITY}, seen
    assert seen[OK] >= MAX_FORWARDED_CALLS and seen[AT_CAPACITY] > 0, seen
    assert (
        _counter(flood_stack, "paygate_gateway_admission_refusals_total", "in_flight") - refused_before
        == (seen[AT_CAPACITY])
    )
    # Every refused call left the bound as it found it: a call after the burst gets in.
    assert asyncio.run(burst(1)) == Counter({OK: 1})


def test_a_call_its_caller_cancels_while_pending_is_counted_as_cancelled(flood_stack: Stack) -> None:
    key_id, _ = flood_stack.create_key("flood-cancel")
    labels = {"grpc_method": "GetBalance", "grpc_type": "unary"}
    started = _counter(flood_stack, "grpc_server_started_total", **labels)
    cancelled = _counter(flood_stack, "grpc_server_handled_total", grpc_code="CANCELLED", **labels)

    async def cancel_once_started() -> None:
        stop = asyncio.Event()
        async with flood_stack.aio_channel() as channel:
            call = channel.stream_unary(PATH)(_never_sends(stop), metadata=_forged(key_id), timeout=60)
            await asyncio.to_thread(
                wait_until,
                lambda: _counter(flood_stack, "grpc_server_started_total", **labels) > started,
                attempts=200,
                what="the gateway took the call",
            )
            call.cancel()
            stop.set()

    asyncio.run(cancel_once_started())
    wait_until(
        lambda: _counter(flood_stack, "grpc_server_handled_total", grpc_code="CANCELLED", **labels) > cancelled,
        attempts=200,
        what="the cancelled call counted as CANCELLED",
    )
