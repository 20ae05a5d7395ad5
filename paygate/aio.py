"""The asyncio client: `PaygateClient`'s surface with `await` (docs/client.md, "asyncio").

    from paygate.aio import PaygateAsyncClient

    async with PaygateAsyncClient("127.0.0.1:50051", key_id, secret, root_certificates=ca) as client:
        payment = await client.create_payment(pb.CreatePaymentRequest(...))

Signing, deadlines, the retry decisions and the typed errors are the very code the sync client runs
(`paygate.calls`, `paygate.retry`, `paygate.errors`); only the waiting differs. Create it inside the event loop
that will use it (a grpc.aio channel belongs to one loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from paygate.calls import CallResult, ChannelSettings, ClientCore, PemSource
from paygate.errors import Cancelled, from_rpc_error
from paygate.retry import STREAM_RECONNECT_CODES, RetryEvent, RetryPolicy, reconnect_delay_s
from paygate.scopes import method_path
from paygate.signing import signed_metadata
from paygate.v1 import payment_gateway_pb2 as pb

ResponseT = TypeVar("ResponseT", bound=Message)


class PaygateAsyncClient(ClientCore):
    """Asyncio client for `paygate.v1.PaymentGateway`; the arguments are `PaygateClient`'s."""

    def __init__(
        self,
        target: str,
        key_id: str,
        secret: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = None,
        timeouts_s: Mapping[str, float] | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        channel: grpc.aio.Channel | None = None,
        channel_options: Iterable[tuple[str, Any]] = (),
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_certificate: PemSource | None = None,
        client_key: PemSource | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        super().__init__(key_id, secret, timeout_s=timeout_s, timeouts_s=timeouts_s, retry=retry, on_retry=on_retry)
        settings = ChannelSettings.of(
            credentials, tls, root_certificates, client_certificate, client_key, tls_server_name, channel_options
        )
        self._channel = channel or settings.open(target, grpc.aio.secure_channel, grpc.aio.insecure_channel)
        self._callables: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> PaygateAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the signed call ----------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        request_id: str | None = None,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> CallResult:
        """As `PaygateClient.call`: the response with its worker, request id and attempts, or a `PaygateError`."""
        prepared = self._prepare(method, request, request_id, extra_metadata)
        attempts = self._attempts(method, timeout_s, retry)
        callable_ = self._callables.get(prepared.path)
        if callable_ is None:
            callable_ = self._channel.unary_unary(prepared.path, response_deserializer=response_type.FromString)
            self._callables[prepared.path] = callable_
        while True:
            deadline_s = attempts.start()
            call = callable_(prepared.body, metadata=prepared.metadata(self.key_id, self._secret), timeout=deadline_s)
            try:
                response = await call
            except grpc.RpcError as raw:
                error, retry_event = self._retry_after(raw, attempts)
                if retry_event is None:
                    raise error from None
                await asyncio.sleep(retry_event.delay_s)
                continue
            trailing, initial = await call.trailing_metadata(), await call.initial_metadata()
            return self._result(response, trailing, initial, attempts.number)

    # -- one method per RPC -------------------------------------------------------------------------------

    async def top_up(self, request: pb.TopUpRequest, **kwargs: Any) -> pb.Payment:
        return (await self.call("TopUp", request, pb.Payment, **kwargs)).response

    async def create_payment(self, request: pb.CreatePaymentRequest, **kwargs: Any) -> pb.Payment:
        return (await self.call("CreatePayment", request, pb.Payment, **kwargs)).response

    async def get_payment(self, request: pb.GetPaymentRequest, **kwargs: Any) -> pb.Payment:
        return (await self.call("GetPayment", request, pb.Payment, **kwargs)).response

    async def get_balance(self, request: pb.GetBalanceRequest, **kwargs: Any) -> pb.Balance:
        return (await self.call("GetBalance", request, pb.Balance, **kwargs)).response

    async def refund_payment(self, request: pb.RefundPaymentRequest, **kwargs: Any) -> pb.Refund:
        return (await self.call("RefundPayment", request, pb.Refund, **kwargs)).response

    async def transfer(self, request: pb.TransferRequest, **kwargs: Any) -> pb.Transfer:
        return (await self.call("Transfer", request, pb.Transfer, **kwargs)).response

    async def list_transactions(
        self, request: pb.ListTransactionsRequest, **kwargs: Any
    ) -> pb.ListTransactionsResponse:
        return (await self.call("ListTransactions", request, pb.ListTransactionsResponse, **kwargs)).response

    async def quote_price(self, request: pb.QuotePriceRequest, **kwargs: Any) -> pb.PriceQuote:
        return (await self.call("QuotePrice", request, pb.PriceQuote, **kwargs)).response

    async def create_webhook_endpoint(
        self, request: pb.CreateWebhookEndpointRequest, **kwargs: Any
    ) -> pb.WebhookEndpoint:
        return (await self.call("CreateWebhookEndpoint", request, pb.WebhookEndpoint, **kwargs)).response

    async def list_webhook_endpoints(self, **kwargs: Any) -> pb.ListWebhookEndpointsResponse:
        request = pb.ListWebhookEndpointsRequest()
        return (await self.call("ListWebhookEndpoints", request, pb.ListWebhookEndpointsResponse, **kwargs)).response

    async def delete_webhook_endpoint(
        self, request: pb.DeleteWebhookEndpointRequest, **kwargs: Any
    ) -> pb.WebhookEndpoint:
        return (await self.call("DeleteWebhookEndpoint", request, pb.WebhookEndpoint, **kwargs)).response

    async def rotate_webhook_endpoint_secret(
        self, request: pb.RotateWebhookEndpointSecretRequest, **kwargs: Any
    ) -> pb.WebhookEndpoint:
        return (await self.call("RotateWebhookEndpointSecret", request, pb.WebhookEndpoint, **kwargs)).response

    async def tokenize_card(self, request: pb.TokenizeCardRequest, **kwargs: Any) -> pb.CardToken:
        return (await self.call("TokenizeCard", request, pb.CardToken, **kwargs)).response

    # -- the event stream ---------------------------------------------------------------------------------

    async def stream_events(
        self,
        after_cursor: str = "",
        types: Sequence[pb.EventType] = (),
        *,
        reconnect: bool = True,
        idle_timeout_s: float = 60.0,
        max_backoff_s: float = 5.0,
    ) -> AsyncIterator[pb.Event]:
        """As `PaygateClient.stream_events`: every event after the cursor exactly once, across reconnections."""
        path = method_path("StreamEvents")
        open_stream = self._channel.unary_stream(path, response_deserializer=pb.StreamEventsResponse.FromString)
        cursor, failures = after_cursor, 0
        while True:
            body = pb.StreamEventsRequest(after_cursor=cursor, types=types).SerializeToString()
            stream = open_stream(body, metadata=signed_metadata(self.key_id, self._secret, path, body))
            try:
                while True:
                    try:
                        message = await asyncio.wait_for(stream.read(), idle_timeout_s)
                    except TimeoutError:
                        if not reconnect:
                            raise _silent(idle_timeout_s) from None
                        break
                    if message is grpc.aio.EOF:
                        break
                    failures = 0
                    if message.HasField("event"):
                        cursor = message.event.event_id
                        yield message.event
            except grpc.RpcError as error:
                if not reconnect or error.code() not in STREAM_RECONNECT_CODES:
                    raise from_rpc_error(error) from None
            finally:
                stream.cancel()
            failures += 1
            await asyncio.sleep(reconnect_delay_s(failures, max_backoff_s))


def _silent(idle_timeout_s: float) -> Cancelled:
    message = f"the event stream was silent for {idle_timeout_s:g} s (heartbeats come every 15 s); cancelled"
    return Cancelled(grpc.StatusCode.CANCELLED, message)
