"""The one domain error hierarchy and its one mapping to gRPC statuses (docs/errors.md).

Service code raises these; the servicer boundary (workers) and the edge (gateway) turn them into a
`grpc.Status` with `to_rpc_status`. Every status carries a `google.rpc.ErrorInfo` whose `reason` is a stable,
machine-readable code (e.g. `INSUFFICIENT_FUNDS`); bad input also carries `google.rpc.BadRequest` field
violations, and retryable conflicts a `google.rpc.RetryInfo`. Messages say what to do, never internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "paygate.v1"


class ConfigurationError(Exception):
    """Settings or environment that cannot work; raised at start-up, never on the wire."""


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class PaygateError(Exception):
    """Base of every error a caller can cause or observe. Subclasses fix the status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    # When set, the status carries a google.rpc.RetryInfo: how long the caller should wait before retrying.
    retry_after_ms: int | None = None

    def __init__(self, message: str, *, reason: str | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if retry_after_ms is not None:
            self.retry_after_ms = max(1, retry_after_ms)

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        packed = any_pb2.Any()
        packed.Pack(info)
        if self.retry_after_ms is None:
            return [packed]
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(self.retry_after_ms)
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return [packed, retry]


class InvalidArgument(PaygateError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        self.violations = list(violations)
        super().__init__(message or f"invalid request: {_summary(self.violations)}")

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [*super().details(), packed]


# The message names as many whole violations as fit in this many characters; every one is in the BadRequest
# details. A request wrong in every field must not produce a message of unbounded size (docs/errors.md).
MAX_SUMMARY_CHARS = 1000


def _summary(violations: Sequence[FieldViolation]) -> str:
    parts: list[str] = []
    used = 0
    for v in violations:
        part = f"{v.field}: {v.description}"
        if parts and used + len(part) + 2 > MAX_SUMMARY_CHARS:
            rest = len(violations) - len(parts)
            return "; ".join(parts) + f"; and {rest} more (every one is in the google.rpc.BadRequest details)"
        parts.append(part)
        used += len(part) + 2
    return "; ".join(parts)


class NotFound(PaygateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(PaygateError):
    """An idempotency key reused with different parameters."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "IDEMPOTENCY_KEY_REUSED"


class Aborted(PaygateError):
    """A conflict that goes away by itself: retry the same call (same idempotency key) after a pause."""

    code = grpc.StatusCode.ABORTED
    reason = "CONFLICT"
    retry_after_ms: int | None = 100


class RequestInFlight(Aborted):
    reason = "REQUEST_IN_FLIGHT"


class LockContention(Aborted):
    reason = "LOCK_CONTENTION"


class FailedPrecondition(PaygateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class InsufficientFunds(FailedPrecondition):
    reason = "INSUFFICIENT_FUNDS"


class IllegalTransition(FailedPrecondition):
    reason = "ILLEGAL_STATE_TRANSITION"


class BalanceLimitExceeded(FailedPrecondition):
    """The movement would take an account past its documented balance ceiling (docs/api.md); nothing moved."""

    reason = "BALANCE_LIMIT_EXCEEDED"


class RiskDenied(FailedPrecondition):
    """The risk engine declined the payment (docs/risk.md); nothing was written. The ErrorInfo's metadata names
    the rules that fired (`rules`, comma-separated) and the combined risk (`score`)."""

    reason = "RISK_DENIED"

    def __init__(self, rules: Sequence[str], score: str) -> None:
        super().__init__(
            f"declined by the risk rules ({', '.join(rules)}; risk {score}); nothing was charged or written. "
            "The same order id may be retried later: it is assessed again"
        )
        self.metadata = {"rules": ",".join(rules), "score": score}

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]


class ResourceExhausted(PaygateError):
    """A limit of the gateway was reached; the caller retries after the RetryInfo delay."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"
    retry_after_ms: int | None = 1000


class RequestTimeout(PaygateError):
    """The call did not present its complete request in time; it was ended without being applied."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "REQUEST_TIMEOUT"


class CallDeadlineExceeded(PaygateError):
    """A forwarded call ran past its deadline (the caller's, or the gateway's default or cap); it may have been
    applied, so the caller retries with the same idempotency key."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unavailable(PaygateError):
    """No worker or dependency can serve now; the call changed nothing or is safe to retry by its key."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Unauthenticated(PaygateError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(PaygateError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unimplemented(PaygateError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


def to_rpc_status(error: PaygateError) -> grpc.Status:
    """The wire form of a domain error: code, message and rich details (google.rpc.Status)."""
    status = status_pb2.Status(
        code=error.code.value[0],  # StatusCode.value is (number, name)
        message=error.message,
        details=error.details(),
    )
    return rpc_status.to_status(status)
