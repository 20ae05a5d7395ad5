"""A Python client that signs every call, retries what is safe to retry and raises typed errors (docs/client.md).

    from paygate.client import PaygateClient
    from paygate.v1 import payment_gateway_pb2 as pb

    with PaygateClient("127.0.0.1:50051", key_id, secret, root_certificates=".paygate/tls/ca.pem") as client:
        payment = client.top_up(pb.TopUpRequest(order_id="o-1", user_id="u-1", amount_minor=10000,
                                                currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX))

TLS (docs/security.md, "TLS and mutual TLS"): `root_certificates` is the CA that signed the gateway's certificate
(bytes or a path; `tls=True` alone trusts the system's roots); `client_certificate` / `client_key` when the gateway
requires client certificates. Without any of them the channel is plaintext, which only a dev stack serves.

The client serializes each request once, signs exactly those bytes and sends them unchanged, so the signature can
never disagree with what travels on the wire, and a retried call resends the same idempotency key. Each attempt
is signed anew (a fresh nonce and timestamp). Retries (`paygate.retry`): UNAVAILABLE and ABORTED with
exponential back-off and full jitter or the server's RetryInfo delay, rate-limit refusals after their RetryInfo
delay, within the call's deadline. Refusals are `paygate.errors.PaygateError` subclasses, which are also
`grpc.RpcError`s. `paygate.aio.PaygateAsyncClient` is the same client for asyncio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from paygate.calls import (
    DEFAULT_TIMEOUT_S,
    CallResult,
    ChannelSettings,
    ClientCore,
    PemSource,
    tls_credentials,
)
from paygate.errors import from_rpc_error
from paygate.interceptor import SigningInterceptor
from paygate.retry import STREAM_RECONNECT_CODES, RetryEvent, RetryPolicy, reconnect_delay_s
from paygate.scopes import method_path
from paygate.signing import signed_metadata
from paygate.v1 import payment_gateway_pb2 as pb

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RECONNECT_CODES",
    "CallResult",
    "PaygateClient",
    "PemSource",
    "SigningInterceptor",
    "tls_credentials",
]

ResponseT = TypeVar("ResponseT", bound=Message)

RECONNECT_CODES = STREAM_RECONNECT_CODES


class PaygateClient(ClientCore):
    """Synchronous client for `paygate.v1.PaymentGateway` (thread-safe; reuse one per process).

    `timeout_s` is the deadline of every call that names none (retries included); without it each method has its
    default (`paygate.calls.DEFAULT_TIMEOUTS_S`), and `timeouts_s` overrides it per method name. `retry` is the
    policy (default `paygate.retry.DEFAULT_RETRY`; `NO_RETRY` turns retries off); `on_retry` sees each retry.
    """

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
        channel: grpc.Channel | None = None,
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
        self._channel = channel or settings.open(target, grpc.secure_channel, grpc.insecure_channel)
        self._callables: dict[str, grpc.UnaryUnaryMultiCallable] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PaygateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the signed call ----------------------------------------------------------------------------------

    def call(
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
        """Sign and send one call, retrying as the policy allows within `timeout_s`; returns the response with
        `x-paygate-worker`, `x-request-id` and the number of attempts, or raises a `PaygateError`."""
        prepared = self._prepare(method, request, request_id, extra_metadata)
        attempts = self._attempts(method, timeout_s, retry)
        callable_ = self._callables.get(prepared.path)
        if callable_ is None:
            # No request serializer: the bytes we signed are the bytes that go out.
            callable_ = self._channel.unary_unary(prepared.path, response_deserializer=response_type.FromString)
            self._callables[prepared.path] = callable_
        while True:
            deadline_s = attempts.start()
            try:
                response, call = callable_.with_call(
                    prepared.body, metadata=prepared.metadata(self.key_id, self._secret), timeout=deadline_s
                )
            except grpc.RpcError as raw:
                error, retry_event = self._retry_after(raw, attempts)
                if retry_event is None:
                    raise error from None
                time.sleep(retry_event.delay_s)
                continue
            return self._result(response, call.trailing_metadata(), call.initial_metadata(), attempts.number)

    # -- one method per RPC -------------------------------------------------------------------------------

    def top_up(self, request: pb.TopUpRequest, **kwargs: Any) -> pb.Payment:
        return self.call("TopUp", request, pb.Payment, **kwargs).response

    def create_payment(self, request: pb.CreatePaymentRequest, **kwargs: Any) -> pb.Payment:
        return self.call("CreatePayment", request, pb.Payment, **kwargs).response

    def get_payment(self, request: pb.GetPaymentRequest, **kwargs: Any) -> pb.Payment:
        return self.call("GetPayment", request, pb.Payment, **kwargs).response

    def get_balance(self, request: pb.GetBalanceRequest, **kwargs: Any) -> pb.Balance:
        return self.call("GetBalance", request, pb.Balance, **kwargs).response

    def refund_payment(self, request: pb.RefundPaymentRequest, **kwargs: Any) -> pb.Refund:
        return self.call("RefundPayment", request, pb.Refund, **kwargs).response

    def transfer(self, request: pb.TransferRequest, **kwargs: Any) -> pb.Transfer:
        return self.call("Transfer", request, pb.Transfer, **kwargs).response

    def list_transactions(self, request: pb.ListTransactionsRequest, **kwargs: Any) -> pb.ListTransactionsResponse:
        return self.call("ListTransactions", request, pb.ListTransactionsResponse, **kwargs).response

    def quote_price(self, request: pb.QuotePriceRequest, **kwargs: Any) -> pb.PriceQuote:
        return self.call("QuotePrice", request, pb.PriceQuote, **kwargs).response

    def create_webhook_endpoint(self, request: pb.CreateWebhookEndpointRequest, **kwargs: Any) -> pb.WebhookEndpoint:
        return self.call("CreateWebhookEndpoint", request, pb.WebhookEndpoint, **kwargs).response

    def list_webhook_endpoints(self, **kwargs: Any) -> pb.ListWebhookEndpointsResponse:
        request = pb.ListWebhookEndpointsRequest()
        return self.call("ListWebhookEndpoints", request, pb.ListWebhookEndpointsResponse, **kwargs).response

    def delete_webhook_endpoint(self, request: pb.DeleteWebhookEndpointRequest, **kwargs: Any) -> pb.WebhookEndpoint:
        return self.call("DeleteWebhookEndpoint", request, pb.WebhookEndpoint, **kwargs).response

    def rotate_webhook_endpoint_secret(
        self, request: pb.RotateWebhookEndpointSecretRequest, **kwargs: Any
    ) -> pb.WebhookEndpoint:
        return self.call("RotateWebhookEndpointSecret", request, pb.WebhookEndpoint, **kwargs).response

    def tokenize_card(self, request: pb.TokenizeCardRequest, **kwargs: Any) -> pb.CardToken:
        return self.call("TokenizeCard", request, pb.CardToken, **kwargs).response

    # -- the event stream ---------------------------------------------------------------------------------

    def stream_events(
        self,
        after_cursor: str = "",
        types: Sequence[pb.EventType] = (),
        *,
        reconnect: bool = True,
        idle_timeout_s: float = 60.0,
        max_backoff_s: float = 5.0,
    ) -> Iterator[pb.Event]:
        """The caller's events after `after_cursor` ("" for the oldest kept), then each new one as it commits
        (docs/events.md). A stream that breaks — a worker or the gateway restarting, the network, nothing heard
        for `idle_timeout_s` (heartbeats come every 15 s) — is called again after a jittered back-off, from the
        last event yielded: nothing is skipped and nothing is yielded twice. Stop by leaving the loop. A refusal
        that reconnecting cannot cure is raised as a `PaygateError`."""
        path = method_path("StreamEvents")
        open_stream = self._channel.unary_stream(path, response_deserializer=pb.StreamEventsResponse.FromString)
        cursor, failures = after_cursor, 0
        while True:
            body = pb.StreamEventsRequest(after_cursor=cursor, types=types).SerializeToString()
            stream = open_stream(body, metadata=signed_metadata(self.key_id, self._secret, path, body))
            watchdog = _Watchdog(idle_timeout_s, stream.cancel)
            try:
                for message in stream:
                    watchdog.reset()
                    failures = 0
                    if message.HasField("event"):
                        cursor = message.event.event_id
                        yield message.event
            except grpc.RpcError as error:
                if not reconnect or not (error.code() in RECONNECT_CODES or watchdog.fired):
                    raise from_rpc_error(error) from None
            finally:
                watchdog.stop()
                stream.cancel()
            failures += 1
            time.sleep(reconnect_delay_s(failures, max_backoff_s))


class _Watchdog:
    """Cancels a stream that has been silent for `timeout_s` (a connection that died without a reset). A message
    only notes the time; one timer at a time checks it, and re-arms for what is left when the stream spoke."""

    def __init__(self, timeout_s: float, cancel: Callable[[], object]) -> None:
        self._timeout_s = timeout_s
        self._cancel = cancel
        self.fired = False
        self._heard = time.monotonic()
        self._stopped = False
        self._timer: threading.Timer | None = None
        self._arm(timeout_s)

    def reset(self) -> None:
        self._heard = time.monotonic()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def _arm(self, delay_s: float) -> None:
        self._timer = threading.Timer(delay_s, self._check)
        self._timer.daemon = True
        self._timer.start()

    def _check(self) -> None:
        if self._stopped:
            return
        silent_s = time.monotonic() - self._heard
        if silent_s < self._timeout_s:
            self._arm(self._timeout_s - silent_s)
            return
        self.fired = True
        self._cancel()
