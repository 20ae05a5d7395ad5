"""Signing for callers who prefer the generated `PaymentGatewayStub` to `PaygateClient` (docs/signing.md):
`grpc.intercept_channel(channel, SigningInterceptor(key_id, secret))`. It signs and sends; it does not retry or
type errors — that is what the clients add (docs/client.md)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from paygate.signing import signed_metadata


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class SigningInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Signs calls made through the generated stubs.

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
