"""TLS on the public port and mutual TLS inside the stack (docs/security.md, "TLS and mutual TLS").

- The gateway's public port: `tls_cert` / `tls_key`, and with `tls_client_ca` it also requires a client
  certificate signed by that CA.
- Inside the stack every process holds `internal_tls_ca` (the CA it trusts) and its own `internal_tls_cert` /
  `internal_tls_key`. Workers require a client certificate from that CA *and* check whose it is: the
  PaymentGateway port admits only `paygate-gateway` (its caller identity headers are then trustworthy on any
  network), the internal port only `paygate-notify-edge`. Clients reach workers under the fixed name
  `paygate-worker` (the target name override), so Unix sockets and pod IPs verify the same way.

Without this material a process talks plaintext, which only dev mode allows.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from runtime.errors import ConfigurationError, PermissionDenied, to_rpc_status
from runtime.settings import Settings

GATEWAY_PEER_NAME = "paygate-gateway"
NOTIFY_EDGE_PEER_NAME = "paygate-notify-edge"
WORKER_SERVER_NAME = "paygate-worker"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Every channel to a worker asks for this name, whatever the address (unix:, an IP from dns:).
WORKER_CHANNEL_TLS_OPTIONS = [("grpc.ssl_target_name_override", WORKER_SERVER_NAME)]


def read_pem(path: str, setting: str) -> bytes:
    """A PEM file's bytes, or a ConfigurationError naming the setting and what is wrong with the file."""
    env = f"PAYGATE_{setting.upper()}"
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{env}: no such file {path}") from None
    except OSError as error:
        raise ConfigurationError(f"{env}: cannot read {path} ({error.strerror})") from None
    if b"-----BEGIN " not in content:
        raise ConfigurationError(f"{env}: {path} is not a PEM file")
    return content


def load_ca(path: str, setting: str) -> bytes:
    content = read_pem(path, setting)
    try:
        x509.load_pem_x509_certificates(content)
    except ValueError:
        raise ConfigurationError(f"PAYGATE_{setting.upper()}: {path} holds no readable certificate") from None
    return content


def load_pair(cert_setting: str, cert_path: str, key_setting: str, key_path: str) -> tuple[bytes, bytes]:
    """A certificate chain and its private key, checked to belong together: (key PEM, chain PEM)."""
    chain = read_pem(cert_path, cert_setting)
    key_pem = read_pem(key_path, key_setting)
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError:
        raise ConfigurationError(f"PAYGATE_{cert_setting.upper()}: {cert_path} holds no readable certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"PAYGATE_{key_setting.upper()}: {key_path} is not an unencrypted PEM private key"
        ) from None
    if leaf.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        # Every handshake would fail; say so at start rather than in each caller's log.
        raise ConfigurationError(
            f"PAYGATE_{cert_setting.upper()}: {cert_path} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if key.public_key() != leaf.public_key():
        raise ConfigurationError(
            f"PAYGATE_{key_setting.upper()} ({key_path}) is not the key of PAYGATE_{cert_setting.upper()} ({cert_path})"
        )
    return key_pem, chain


def _internal(settings: Settings, role: str) -> tuple[bytes, bytes, bytes] | None:
    """(CA, key, chain) of the internal mTLS, None in dev mode without it; production refuses to go without."""
    if not settings.internal_tls_ca:
        if settings.mode == "production":
            raise ConfigurationError(
                f"production mode refuses a plaintext {role}: set PAYGATE_INTERNAL_TLS_CA, PAYGATE_INTERNAL_TLS_CERT "
                "and PAYGATE_INTERNAL_TLS_KEY (mutual TLS between gateways, workers and the notification edge)"
            )
        return None
    ca = load_ca(settings.internal_tls_ca, "internal_tls_ca")
    cert_path, key_path = settings.internal_tls_cert, settings.internal_tls_key
    key, chain = load_pair("internal_tls_cert", cert_path, "internal_tls_key", key_path)
    return ca, key, chain


def public_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gateway's public port: TLS (optionally requiring client certificates), or None for dev plaintext."""
    if not settings.tls_cert:
        if settings.tls_client_ca:  # `paygate serve` in dev mode hands its gateway a dev certificate first
            raise ConfigurationError("PAYGATE_TLS_CLIENT_CA needs PAYGATE_TLS_CERT and PAYGATE_TLS_KEY (TLS first)")
        if settings.mode == "production":
            raise ConfigurationError(
                "production mode refuses a plaintext gateway: set PAYGATE_TLS_CERT and PAYGATE_TLS_KEY "
                "(PEM files of the public port's certificate chain and key)"
            )
        return None
    key, chain = load_pair("tls_cert", settings.tls_cert, "tls_key", settings.tls_key)
    client_ca = load_ca(settings.tls_client_ca, "tls_client_ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=bool(client_ca))


def worker_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """A worker's ports: mutual TLS under the internal CA (the peer's name is checked by `RequirePeer`)."""
    material = _internal(settings, "worker")
    if material is None:
        return None
    ca, key, chain = material
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)


def worker_channel_credentials(settings: Settings, role: str = "gateway") -> grpc.ChannelCredentials | None:
    """What a gateway or the notification edge presents to workers, and the CA it verifies them with."""
    material = _internal(settings, role)
    if material is None:
        return None
    ca, key, chain = material
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)


def worker_channel(
    address: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=[*options, *WORKER_CHANNEL_TLS_OPTIONS])


def peer_check(credentials: grpc.ServerCredentials | None, name: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of a worker port that admits only `name` (none on a dev plaintext port)."""
    return [] if credentials is None else [RequirePeer(frozenset({name}))]


# -- whose certificate: the peer check on worker ports -------------------------------------------------------


def peer_names(context: grpc.aio.ServicerContext) -> set[str]:
    """The names the peer's verified certificate carries (common name and DNS alternative names)."""
    auth = context.auth_context() or {}
    return {
        value.decode("utf-8", "replace")
        for key in ("x509_common_name", "x509_subject_alternative_name")
        for value in auth.get(key, ())
    }


class RequirePeer(grpc.aio.ServerInterceptor):
    """Admits a call only when the peer's certificate names one of `names` (PERMISSION_DENIED otherwise).

    The TLS handshake already refused peers without a certificate of the internal CA; this tells its holders
    apart, so that the notification edge's certificate cannot call the PaymentGateway service."""

    def __init__(self, names: frozenset[str]) -> None:
        self._names = names
        # One guarded handler per registered method (a bounded set: unknown methods get None, never cached).
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(HEALTH_PREFIX):
            # Any certificate of the internal CA may ask for health (the handshake checked that much): it tells
            # nothing, and lets a worker's own probe (deploy/kubernetes) present the worker's certificate.
            return await continuation(handler_call_details)
        guarded = self._guarded.get(method)
        if guarded is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            guarded = self._guarded[method] = _guarded(handler, self._check)
        return guarded

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if peer_names(context) & self._names:
            return
        status = to_rpc_status(
            PermissionDenied(
                f"this port serves only {' or '.join(sorted(self._names))} certificates", reason="PEER_NOT_ALLOWED"
            )
        )
        await context.abort(status.code, status.details, status.trailing_metadata)


def _guarded(handler: grpc.RpcMethodHandler, check: Callable[[Any], Awaitable[None]]) -> grpc.RpcMethodHandler:
    """The same handler with `check(context)` run before its behaviour, whatever its kind."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, make in kinds:
        behaviour = getattr(handler, attribute)
        if behaviour is None:
            continue
        if inspect.isasyncgenfunction(behaviour):
            wrapped: Any = _guard_generator(behaviour, check)
        else:
            wrapped = _guard_coroutine(behaviour, check)
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _guard_coroutine(behaviour: Any, check: Callable[[Any], Awaitable[None]]) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return guarded


def _guard_generator(behaviour: Any, check: Callable[[Any], Awaitable[None]]) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        async for message in behaviour(request, context):
            yield message

    return guarded
