"""A Python client that signs every call (docs/signing.md).

    from paygate.client import PaygateClient
    from paygate.v1 import payment_gateway_pb2 as pb

    with PaygateClient("127.0.0.1:50051", key_id, secret, root_certificates=".paygate/tls/ca.pem") as client:
        payment = client.top_up(pb.TopUpRequest(order_id="o-1", user_id="u-1", amount_minor=10000,
                                                currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX))

TLS (docs/security.md, "TLS and mutual TLS"): `root_certificates` is the CA that signed the gateway's certificate
(bytes or a path; `tls=True` alone trusts the system's roots); `client_certificate` / `client_key` when the gateway
requires client certificates. Without any of them the channel is plaintext, which only a dev stack serves.

The client serializes each request itself, signs exactly those bytes and sends them unchanged, so the signature
can never disagree with what travels on the wire. `SigningInterceptor` adds the same signature to calls made
through the generated `PaymentGatewayStub`, for callers who prefer plain stubs.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from paygate.scopes import method_path
from paygate.signing import REQUEST_ID_HEADER, WORKER_HEADER, signed_metadata
from paygate.v1 import payment_gateway_pb2 as pb

ResponseT = TypeVar("ResponseT", bound=Message)

DEFAULT_TIMEOUT_S = 10.0
# A stream ended with one of these is called again (the gateway or its worker went away, or a limit was full).
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class CallResult:
    """A response plus the metadata the gateway adds (which worker served it, the request id)."""

    response: Any
    worker: str | None
    request_id: str | None


PemSource = bytes | str | os.PathLike[str]


def _pem(source: PemSource | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if source is None or isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read()


def tls_credentials(
    root_certificates: PemSource | None = None,
    client_certificate: PemSource | None = None,
    client_key: PemSource | None = None,
) -> grpc.ChannelCredentials:
    """Channel credentials for a TLS gateway: its CA (None: the system's roots) and an optional client pair."""
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates),
        private_key=_pem(client_key),
        certificate_chain=_pem(client_certificate),
    )


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key and isinstance(v, str):
            return v
    return None


class PaygateClient:
    """Synchronous signing client for `paygate.v1.PaymentGateway` (thread-safe; reuse one per process)."""

    def __init__(
        self,
        target: str,
        key_id: str,
        secret: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: grpc.Channel | None = None,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_certificate: PemSource | None = None,
        client_key: PemSource | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self.timeout_s = timeout_s
        tls_asked = tls or any(v is not None for v in (root_certificates, client_certificate, client_key))
        if credentials is None and tls_asked:
            credentials = tls_credentials(root_certificates, client_certificate, client_key)
        # The name the gateway's certificate must carry, when it differs from the target's host (an IP address).
        options = [("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []
        if channel is not None:
            self._channel = channel
        elif credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target)
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
        request_id: str | None = None,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> CallResult:
        """Sign and send one call; returns the response with `x-paygate-worker` and `x-request-id`."""
        path = method_path(method)
        body = request.SerializeToString()
        metadata = signed_metadata(self.key_id, self._secret, path, body)
        if request_id:
            metadata.append((REQUEST_ID_HEADER, request_id))
        metadata.extend(extra_metadata)
        callable_ = self._callables.get(path)
        if callable_ is None:
            # No request serializer: the bytes we signed are the bytes that go out.
            callable_ = self._channel.unary_unary(path, response_deserializer=response_type.FromString)
            self._callables[path] = callable_
        response, call = callable_.with_call(
            body, metadata=metadata, timeout=self.timeout_s if timeout_s is None else timeout_s
        )
        # The gateway sends both in the trailing metadata (cheaper than a separate headers frame).
        response_metadata = (*(call.trailing_metadata() or ()), *(call.initial_metadata() or ()))
        return CallResult(
            response=response,
            worker=_metadata_value(response_metadata, WORKER_HEADER),
            request_id=_metadata_value(response_metadata, REQUEST_ID_HEADER),
        )

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
        last event yielded: nothing is skipped and nothing is yielded twice. Stop by leaving the loop."""
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
                    raise
            finally:
                watchdog.stop()
                stream.cancel()
            failures += 1
            time.sleep(min(max_backoff_s, 0.05 * 2**failures) * random.uniform(0.5, 1.0))


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


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class SigningInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Signs calls made through the generated stubs: `grpc.intercept_channel(channel, SigningInterceptor(...))`.

    It signs `request.SerializeToString()`, which is what the stub then sends (protobuf serialization of one
    message object is stable within a process; messages with map fields would need deterministic serialization).
    """

    def __init__(self, key_id: str, secret: str) -> None:
        self._key_id = key_id
        self._secret = secret

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Message
    ) -> Any:
        method = client_call_details.method
        path = method.decode() if isinstance(method, bytes) else method
        metadata = list(client_call_details.metadata or ())
        metadata.extend(signed_metadata(self._key_id, self._secret, path, request.SerializeToString()))
        details = _ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
            client_call_details.compression,
        )
        return continuation(details, request)
