"""Small gRPC helpers shared by the gateway and the workers."""

from __future__ import annotations

from pathlib import Path

import grpc

from runtime.errors import ConfigurationError

# so_reuseport=0: otherwise gRPC silently shares a port that another process already holds
# (docs/architecture.md, "Processes").
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> None:
    """Bind (TLS when given credentials, runtime/tls.py) or fail loudly: gRPC reports a failed bind only by
    returning port 0."""
    if address.startswith("unix:"):
        # A socket file left by a killed predecessor would make the bind fail; the supervisor owns these paths.
        Path(address.removeprefix("unix:").removeprefix("//")).unlink(missing_ok=True)
    try:
        secure = credentials is not None
        port = server.add_secure_port(address, credentials) if secure else server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises this (not port 0) for some failures, e.g. a name that does not resolve
        port = 0
    if port == 0:
        raise ConfigurationError(
            f"could not listen on {address} (in use, not permitted, or a name that does not resolve); "
            "check --listen / PAYGATE_LISTEN"
        )


# Client channels from one process of the stack to workers (gateway → workers, notification edge → workers).
WORKER_CHANNEL_OPTIONS = [
    # Come back quickly after a worker restarts: the default back-off grows to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.enable_retries", 0),  # we decide about retries: only undelivered calls go to another worker
]
