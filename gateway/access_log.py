"""One JSON access line per call through the gateway, and one warning per refused signature (docs/configuration.md,
"Logs").

The line says who called what and how it ended: method, gRPC status, latency, key id, owner, worker, request id and
peer. It is built from what the gateway already knows without parsing the body — the call's headers, the caller
the signature check found and the worker's trailers — so it can never carry a card number, a phone number, a secret
or a signature: none of them is in those. A key id the caller sent is logged only in its documented form (so a
refused call cannot write arbitrary text into the log), and the signature header never is.

Health checks and server reflection are not access-logged (docs/decisions.md #115): they are unsigned, carry no
caller, and a load balancer's probes would drown the calls that matter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.metadata import first
from paygate.signing import KEY_ID_HEADER, KEY_ID_PATTERN

ACCESS_LOGGER = "paygate.access"
AUTH_LOGGER = "paygate.auth"


@dataclass
class CallNotes:
    """What a call's handler learns on the way, for its access line: the verified caller and the serving worker."""

    key_id: str = ""
    owner: str = ""
    worker: str = ""


def claimed_key_id(metadata: Any) -> str:
    """The key id a caller sent, if it has the documented form (else nothing: it is not written to the log)."""
    key_id = first(metadata, KEY_ID_HEADER)
    return key_id if key_id is not None and KEY_ID_PATTERN.fullmatch(key_id) else ""


class AccessLog:
    """Writes through the `paygate.access` logger, in the process's one JSON format (runtime/logs.py)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._access = logging.getLogger(ACCESS_LOGGER)
        self._auth = logging.getLogger(AUTH_LOGGER)
        self._enabled = enabled

    def call(
        self,
        path: str,
        code: grpc.StatusCode,
        elapsed_s: float,
        request_id: str,
        context: grpc.aio.ServicerContext,
        metadata: Any,
        notes: CallNotes,
    ) -> None:
        if not self._enabled or not self._access.isEnabledFor(logging.INFO):
            return
        fields = {
            "method": path,
            "code": code.name,
            "latency_ms": round(elapsed_s * 1000.0, 3),
            # A refused call has no verified caller: the key id it claimed, when well formed, says who tried.
            "key_id": notes.key_id or claimed_key_id(metadata),
            "owner": notes.owner,
            "worker": notes.worker,
            "request_id": request_id,
            "peer": context.peer() or "",
        }
        self._access.info("call", extra={"fields": fields})

    def auth_failed(self, path: str, rule: str, reason: str, context: grpc.aio.ServicerContext, metadata: Any) -> None:
        """A refused signature or scope: the rule that failed (as in paygate_auth_failures_total) and the key id the
        caller claimed — never the signature, the nonce or anything derived from the secret."""
        fields = {
            "method": path,
            "rule": rule,
            "reason": reason,
            "key_id": claimed_key_id(metadata),
            "peer": context.peer() or "",
        }
        self._auth.warning("authentication failed", extra={"fields": fields})
