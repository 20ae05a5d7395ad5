"""The asyncio client through a real `paygate serve`: the sync client's cases, awaited (docs/client.md)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from paygate import errors
from paygate.aio import PaygateAsyncClient
from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from tests.e2e.test_client_retries import PATIENT, Retries, extra_gateway, purchase, top_up, uid
from tests.support import Stack, free_port, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        Path(tmp_path_factory.mktemp("client-async")), workers=2, extra_env={"PAYGATE_LOCK_WAIT_MS": "60000"}
    )
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


@pytest.fixture(scope="module")
def key(stack: Stack) -> tuple[str, str]:
    return stack.create_key("client-async")


def client_of(stack: Stack, key: tuple[str, str], target: str | None = None, **kwargs: object) -> PaygateAsyncClient:
    return PaygateAsyncClient(
        target or stack.listen,
        *key,
        credentials=stack.channel_credentials(),
        **kwargs,  # type: ignore[arg-type]
    )


async def balance(client: PaygateAsyncClient, user: str) -> int:
    return int((await client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY"))).available_minor)


async def poll(predicate, what: str, attempts: int = 600) -> None:  # type: ignore[no-untyped-def]
    """wait_until for a coroutine: a bounded number of looks, the loop free in between."""
    for _ in range(attempts):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen after {attempts} attempts")


def test_an_async_call_made_before_the_gateway_listens_goes_through_once_it_does(
    stack: Stack, key: tuple[str, str], tmp_path: Path
) -> None:
    listen, retries, user = f"127.0.0.1:{free_port()}", Retries(), uid("early")

    async def scenario() -> None:
        async with client_of(stack, key, listen, retry=PATIENT, timeout_s=120, on_retry=retries) as client:
            call = asyncio.ensure_future(client.call("TopUp", top_up(user), pb.Payment))
            await poll(lambda: len(retries.events) >= 2, "the client retrying a closed port")
            with extra_gateway(stack, tmp_path / "late-gateway", listen):
                result = await call
                assert await balance(client, user) == 10_000
        assert result.response.status == pb.PAYMENT_STATUS_SUCCEEDED and result.attempts == len(retries.events) + 1
        assert [event.attempt for event in retries.events] == list(range(1, result.attempts))
        assert retries.codes() == {grpc.StatusCode.UNAVAILABLE}

    asyncio.run(scenario())


def test_async_purchases_ride_through_a_gateway_restart_and_each_moves_money_once(
    stack: Stack, key: tuple[str, str]
) -> None:
    retries, user, concurrent = Retries(), uid("restart"), 8

    async def scenario() -> None:
        async with client_of(stack, key, retry=PATIENT, timeout_s=120, on_retry=retries) as client:
            await client.top_up(top_up(user))
            order_ids = [uid("o") for _ in range(4 * concurrent)]
            first = await client.create_payment(purchase(user, order_ids[0]))
            os.kill(stack.state()["children"]["gateway"]["pid"], signal.SIGKILL)
            # Concurrent purchases, several of them for the same order ids: each order id is one payment.
            rounds = [purchase(user, order_id) for order_id in order_ids for _ in range(2)]
            done = await asyncio.gather(*(client.create_payment(request) for request in rounds))
            by_order: dict[str, set[str]] = {}
            for payment in [first, *done]:
                by_order.setdefault(payment.order_id, set()).add(payment.payment_id)
            assert sorted(by_order) == sorted(order_ids) and all(len(ids) == 1 for ids in by_order.values())
            assert await balance(client, user) == 10_000 - 100 * len(order_ids)
        assert grpc.StatusCode.UNAVAILABLE in retries.codes()

    asyncio.run(scenario())
    verify = stack.cli("ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_async_aborted_is_retried_until_the_first_call_answers(stack: Stack, key: tuple[str, str]) -> None:
    payer, payee, retries = uid("payer"), uid("held"), Retries()
    store = redis.Redis.from_url((stack.data_dir / "run" / "redis.url").read_text().strip())
    lock = f"paygate:{{account:wallet:{payee}:CNY}}:lock"
    transfer = pb.TransferRequest(
        transfer_id=uid("t"), from_user_id=payer, to_user_id=payee, amount_minor=250, currency="CNY"
    )

    async def scenario() -> None:
        async with (
            client_of(stack, key, retry=NO_RETRY, timeout_s=60) as first,
            client_of(stack, key, retry=PATIENT, timeout_s=60, on_retry=retries) as second,
        ):
            await first.top_up(top_up(payer, 1_000))
            store.set(lock, "held-by-test", px=600_000)
            held = asyncio.ensure_future(first.transfer(transfer))
            await poll(lambda: list(store.scan_iter(match=f"*inflight*{transfer.transfer_id}*")), "the first in flight")
            retried = asyncio.ensure_future(second.call("Transfer", transfer, pb.Transfer))
            await poll(lambda: grpc.StatusCode.ABORTED in retries.codes(), "an ABORTED retried")
            store.delete(lock)
            original, result = await held, await retried
            assert result.response.entry_id == original.entry_id and result.attempts == len(retries.events) + 1 >= 2
            assert await balance(first, payer) == 750
        assert all(e.from_retry_info and e.error.reason == "REQUEST_IN_FLIGHT" for e in retries.events)

    try:
        asyncio.run(scenario())
    finally:
        store.delete(lock)
        store.close()


def test_async_refusals_are_typed_and_not_retried(stack: Stack, key: tuple[str, str]) -> None:
    retries = Retries()
    bad = pb.TopUpRequest(
        order_id="bad id!", user_id="u", amount_minor=-5, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
    )

    async def scenario() -> None:
        async with client_of(stack, key, on_retry=retries) as client:
            with pytest.raises(errors.InvalidArgument) as refused:
                await client.top_up(bad)
            assert {"order_id", "amount_minor"} <= set(refused.value.violations_by_field())
            assert refused.value.attempts == 1 and refused.value.worker
            with pytest.raises(errors.NotFound):
                await client.get_payment(pb.GetPaymentRequest(order_id=uid("missing")))
        async with client_of(stack, (key[0], "not-the-secret")) as forged:
            with pytest.raises(errors.Unauthenticated) as refused_signature:
                await forged.quote_price(pb.QuotePriceRequest(list_price_minor=1, currency="CNY"))
            assert isinstance(refused_signature.value, grpc.RpcError)

    asyncio.run(scenario())
    assert retries.events == []


def test_the_async_event_stream_follows_new_events(stack: Stack, key: tuple[str, str]) -> None:
    user = uid("events")

    async def scenario() -> list[pb.Event]:
        async with client_of(stack, key) as client:
            paid = await client.top_up(top_up(user, 500))
            seen: list[pb.Event] = []
            async for event in client.stream_events():
                seen.append(event)
                if event.payment.payment_id == paid.payment_id and event.type == pb.EVENT_TYPE_PAYMENT_SUCCEEDED:
                    return seen
        raise AssertionError("the stream ended")

    events = asyncio.run(scenario())
    assert len({e.event_id for e in events}) == len(events)  # none twice
