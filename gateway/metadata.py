"""Reading call metadata in the gateway: one header's value, and the request id a call is known by."""

from __future__ import annotations

from typing import Any

from paygate.signing import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from runtime.ids import new_id


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
