"""Reading call metadata in the gateway: one header's value, the request id a call is known by, and what of a
worker's trailers passes back to the caller."""

from __future__ import annotations

from typing import Any

import grpc

from paygate.signing import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from runtime.ids import new_id

# Trailing metadata that gRPC itself manages or that we set; everything else from the worker passes back as is.
_RELAYED_OURSELVES = frozenset({"grpc-status", "grpc-message", REQUEST_ID_HEADER})


def first(metadata: Any, key: str) -> str | None:
    """The first value of `key` in gRPC metadata (pairs), if it is text."""
    for k, v in metadata or ():
        if k == key and isinstance(v, str):
            return v
    return None


def request_id_of(metadata: tuple[Any, ...]) -> str:
    """The caller's x-request-id if it is well formed, else a new one (logs and answers carry it)."""
    given = first(metadata, REQUEST_ID_HEADER)
    if given and REQUEST_ID_PATTERN.fullmatch(given):
        return given
    return new_id("req")


def worker_trailers(error: grpc.aio.AioRpcError, request_id: str) -> tuple[tuple[str, Any], ...]:
    """A worker's trailers for the caller, rich details (grpc-status-details-bin) included, with our request id."""
    kept = [(k, v) for k, v in (error.trailing_metadata() or ()) if k not in _RELAYED_OURSELVES]
    return (*kept, (REQUEST_ID_HEADER, request_id))
