"""What the sync and asyncio clients share: channel settings, default deadlines, signing each attempt, reading the
answer's metadata, and the retry loop's bookkeeping (docs/client.md). Each client adds only its way of waiting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from paygate.errors import PaygateError, from_rpc_error
from paygate.retry import DEFAULT_RETRY, Attempts, RetryEvent, RetryPolicy
from paygate.scopes import METHOD_SCOPES, method_path
from paygate.signing import REQUEST_ID_HEADER, WORKER_HEADER, signed_metadata

# The deadline of a whole call, all its attempts included, unless the client or the call says otherwise.
DEFAULT_TIMEOUT_S = 10.0
# Calls that may wait for a payment provider's answer (or for one of its bounded slots) get longer; the gateway
# caps every deadline at its own maximum (60 s by default, docs/errors.md).
DEFAULT_TIMEOUTS_S: Mapping[str, float] = {"TopUp": 30.0, "CreatePayment": 30.0, "RefundPayment": 30.0}
# A restarted gateway is found again within a second or two, not after gRPC's default reconnect back-off (which
# grows to two minutes), so a retrying call does not spend its whole deadline on a channel that is still waiting.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

PemSource = bytes | str | os.PathLike[str]
ChannelT = TypeVar("ChannelT")


@dataclass(frozen=True)
class CallResult:
    """A response plus the metadata the gateway adds (which worker served it, the request id) and how many attempts
    the call took."""

    response: Any
    worker: str | None
    request_id: str | None
    attempts: int = 1


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


@dataclass(frozen=True)
class ChannelSettings:
    """How to open a channel to a gateway: credentials (None: plaintext, which only a dev stack serves) and options."""

    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def of(
        cls,
        credentials: grpc.ChannelCredentials | None,
        tls: bool,
        root_certificates: PemSource | None,
        client_certificate: PemSource | None,
        client_key: PemSource | None,
        tls_server_name: str | None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> ChannelSettings:
        tls_asked = tls or any(v is not None for v in (root_certificates, client_certificate, client_key))
        if credentials is None and tls_asked:
            credentials = tls_credentials(root_certificates, client_certificate, client_key)
        chosen = dict(CHANNEL_OPTIONS)
        if tls_server_name:  # the name the gateway's certificate carries, when the target is an IP address
            chosen["grpc.ssl_target_name_override"] = tls_server_name
        chosen.update(options)
        return cls(credentials, tuple(chosen.items()))

    def open(self, target: str, secure: Callable[..., ChannelT], insecure: Callable[..., ChannelT]) -> ChannelT:
        """A channel from `grpc` or `grpc.aio` (the caller passes that module's two constructors)."""
        if self.credentials is not None:
            return secure(target, self.credentials, options=self.options)
        return insecure(target, options=self.options)


def _metadata_value(metadata: Iterable[Any], key: str) -> str | None:
    for k, v in metadata:
        if k == key and isinstance(v, str):
            return v
    return None


@dataclass(frozen=True)
class PreparedCall:
    """One call's request, serialized once: every attempt sends these exact bytes (so the idempotency key and
    every other field are the same each time) under a signature made fresh for that attempt."""

    method: str
    path: str
    body: bytes
    extra_metadata: tuple[tuple[str, str], ...]

    def metadata(self, key_id: str, secret: str) -> list[tuple[str, str]]:
        """A new timestamp and nonce for this attempt: the gateway refuses a nonce it has seen."""
        return [*signed_metadata(key_id, secret, self.path, self.body), *self.extra_metadata]


class ClientCore:
    """The state and decisions both clients share; subclasses open the channel and wait their own way."""

    def __init__(
        self,
        key_id: str,
        secret: str,
        *,
        timeout_s: float | None,
        timeouts_s: Mapping[str, float] | None,
        retry: RetryPolicy | None,
        on_retry: Callable[[RetryEvent], None] | None,
    ) -> None:
        unknown = sorted(set(timeouts_s or ()) - set(METHOD_SCOPES))
        if unknown:
            raise ValueError(f"timeouts_s names unknown method(s): {', '.join(unknown)}")
        for name, value in (("timeout_s", timeout_s), *(timeouts_s or {}).items()):
            if value is not None and not value > 0:
                raise ValueError(f"the deadline for {name} must be more than 0 seconds")
        self.key_id = key_id
        self._secret = secret
        self.timeout_s = timeout_s
        self._timeouts_s = dict(timeouts_s or {})
        self.retry = DEFAULT_RETRY if retry is None else retry
        self._on_retry = on_retry

    def default_timeout_s(self, method: str) -> float:
        """The deadline of a call of `method` that names none: per method, then the client's, then the default."""
        if method in self._timeouts_s:
            return self._timeouts_s[method]
        if self.timeout_s is not None:
            return self.timeout_s
        return DEFAULT_TIMEOUTS_S.get(method, DEFAULT_TIMEOUT_S)

    def _prepare(
        self, method: str, request: Message, request_id: str | None, extra_metadata: Iterable[tuple[str, str]]
    ) -> PreparedCall:
        extra = ((REQUEST_ID_HEADER, request_id),) if request_id else ()
        return PreparedCall(method, method_path(method), request.SerializeToString(), (*extra, *extra_metadata))

    def _attempts(self, method: str, timeout_s: float | None, retry: RetryPolicy | None) -> Attempts:
        chosen = self.retry if retry is None else retry
        return Attempts(method, chosen, self.default_timeout_s(method) if timeout_s is None else timeout_s)

    def _retry_after(self, raw: grpc.RpcError, attempts: Attempts) -> tuple[PaygateError, RetryEvent | None]:
        """The typed error of a failed attempt and, when it is retried, the retry (already reported)."""
        error = from_rpc_error(raw, attempts=attempts.number)
        retry = attempts.retry_after(error)
        if retry is not None and self._on_retry is not None:
            self._on_retry(retry)
        return error, retry

    @staticmethod
    def _result(
        response: Any, trailing: Iterable[Any] | None, initial: Iterable[Any] | None, attempts: int
    ) -> CallResult:
        # The gateway sends its headers in the trailing metadata (cheaper than a separate headers frame).
        both = (*(trailing or ()), *(initial or ()))
        return CallResult(
            response=response,
            worker=_metadata_value(both, WORKER_HEADER),
            request_id=_metadata_value(both, REQUEST_ID_HEADER),
            attempts=attempts,
        )
