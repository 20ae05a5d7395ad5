"""Typed errors of the Paygate clients (docs/client.md, "Errors"; the codes and reasons: docs/errors.md).

Every refusal a client raises is a `PaygateError`: its gRPC code and message, the `google.rpc.ErrorInfo` reason,
domain and metadata, the `google.rpc.BadRequest` field violations, the `google.rpc.RetryInfo` delay, the request
id and the worker that answered, and how many attempts the call took. One subclass per class of failure, so a
caller branches with `except NotFound:` instead of comparing codes.

`PaygateError` is a `grpc.RpcError` with `.code()`, `.details()`, `.trailing_metadata()`, `.initial_metadata()`
and `.debug_error_string()`, so code written against raw gRPC errors (`except grpc.RpcError`,
`grpc_status.rpc_status.from_call(error)`) keeps working unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from paygate.signing import REQUEST_ID_HEADER, WORKER_HEADER

STATUS_DETAILS_HEADER = "grpc-status-details-bin"

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as the worker named it (`google.rpc.BadRequest.FieldViolation`)."""

    field: str
    description: str


class PaygateError(grpc.RpcError):
    """A call that ended without an answer. Subclasses say which class of failure; see the module docstring."""

    grpc_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_delay_s: float | None = None,
        request_id: str | None = None,
        worker: str | None = None,
        attempts: int = 1,
        trailing_metadata: Metadata = (),
        initial_metadata: Metadata = (),
        debug_error_string: str = "",
    ) -> None:
        super().__init__(message)
        self.status_code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.field_violations = field_violations
        self.retry_delay_s = retry_delay_s
        self.request_id = request_id
        self.worker = worker
        self.attempts = attempts
        self._trailing_metadata = trailing_metadata
        self._initial_metadata = initial_metadata
        self._debug_error_string = debug_error_string

    # -- the grpc.RpcError / grpc.Call surface that existing callers use --------------------------------------

    def code(self) -> grpc.StatusCode:
        return self.status_code

    def details(self) -> str:
        return self.message

    def trailing_metadata(self) -> Metadata:
        return self._trailing_metadata

    def initial_metadata(self) -> Metadata:
        return self._initial_metadata

    def debug_error_string(self) -> str:
        return self._debug_error_string

    # -- convenience ------------------------------------------------------------------------------------------

    def violations_by_field(self) -> dict[str, str]:
        """The field violations as {field: description} (a field named twice keeps its first description)."""
        found: dict[str, str] = {}
        for violation in self.field_violations:
            found.setdefault(violation.field, violation.description)
        return found

    def __str__(self) -> str:
        parts = [f"{self.status_code.name}: {self.message}"]
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.retry_delay_s is not None:
            parts.append(f"retry_after={self.retry_delay_s:g}s")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args only; keep every field so an error can cross a process pool.
        return (_rebuild, (type(self), self.status_code, self.message, self.__dict__))


def _rebuild(cls: type[PaygateError], code: grpc.StatusCode, message: str, state: dict[str, Any]) -> PaygateError:
    error = cls(code, message)
    error.__dict__.update(state)
    return error


class InvalidArgument(PaygateError):
    """The request broke the field grammar; `field_violations` names every bad field. Nothing was read or written."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PaygateError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PaygateError):
    """An idempotency key reused with different parameters (reason IDEMPOTENCY_KEY_REUSED)."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(PaygateError):
    """Insufficient funds, an over-refund, a refused transition, a risk denial: `reason` says which."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(PaygateError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(PaygateError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(PaygateError):
    """A limit was full; without `retry_delay_s` it will not pass by waiting (a message above the size limit)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    """A rate, concurrency or capacity limit refused the call before it was applied; come back after
    `retry_delay_s`."""


class Unavailable(PaygateError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class Aborted(PaygateError):
    """The first call with this idempotency key is still in flight, or a lock stayed busy: retry after
    `retry_delay_s` with the same key."""

    grpc_code = grpc.StatusCode.ABORTED


class DeadlineExceeded(PaygateError):
    """The call ran out of time; it may have been applied, so retry with the same idempotency key."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(PaygateError):
    grpc_code = grpc.StatusCode.CANCELLED


class Unimplemented(PaygateError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(PaygateError):
    """A bug on the server's side; report it with the `request_id`."""

    grpc_code = grpc.StatusCode.INTERNAL


_CLASS_OF_CODE: dict[grpc.StatusCode, type[PaygateError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
        Aborted,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        Internal,
    )
    if cls.grpc_code is not None
}


def error_class(code: grpc.StatusCode, retry_delay_s: float | None) -> type[PaygateError]:
    """The class for a status; a RESOURCE_EXHAUSTED that says when to come back is a RateLimited."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay_s is not None:
        return RateLimited
    return _CLASS_OF_CODE.get(code, PaygateError)


def _pairs(metadata: Iterable[Any] | None) -> Metadata:
    """Sync gRPC gives a tuple of (key, value) named tuples, grpc.aio a Metadata object; both iterate as pairs."""
    return tuple((str(key), value) for key, value in metadata or ())


def _text(metadata: Metadata, key: str) -> str | None:
    for name, value in metadata:
        if name == key and isinstance(value, str):
            return value
    return None


@dataclass
class _Details:
    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] | None = None
    field_violations: tuple[FieldViolation, ...] = ()
    retry_delay_s: float | None = None


def _decode_details(trailing: Metadata) -> _Details:
    """ErrorInfo, BadRequest and RetryInfo out of `grpc-status-details-bin`; a detail that does not parse is
    skipped, so the caller always gets the error itself rather than a decoding failure."""
    found = _Details()
    raw = next((v for k, v in trailing if k == STATUS_DETAILS_HEADER and isinstance(v, bytes)), None)
    if raw is None:
        return found
    try:
        status = status_pb2.Status.FromString(raw)
    except DecodeError:
        return found
    for packed in status.details:
        info, bad_request, retry = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
        )
        if packed.Unpack(info):
            found.reason, found.domain, found.metadata = info.reason, info.domain, dict(info.metadata)
        elif packed.Unpack(bad_request):
            found.field_violations = tuple(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
        elif packed.Unpack(retry):
            found.retry_delay_s = retry.retry_delay.ToTimedelta().total_seconds()
    return found


def error_from_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Iterable[Any] | None = (),
    initial_metadata: Iterable[Any] | None = (),
    *,
    attempts: int = 1,
    debug_error_string: str = "",
) -> PaygateError:
    """The typed error for a status as it came off the wire."""
    trailing, initial = _pairs(trailing_metadata), _pairs(initial_metadata)
    details = _decode_details(trailing)
    both = (*trailing, *initial)  # the gateway sends its headers in the trailers (cheaper than a headers frame)
    return error_class(code, details.retry_delay_s)(
        code,
        message,
        reason=details.reason,
        domain=details.domain,
        metadata=details.metadata,
        field_violations=details.field_violations,
        retry_delay_s=details.retry_delay_s,
        request_id=_text(both, REQUEST_ID_HEADER),
        worker=_text(both, WORKER_HEADER),
        attempts=attempts,
        trailing_metadata=trailing,
        initial_metadata=initial,
        debug_error_string=debug_error_string,
    )


def from_rpc_error(error: grpc.RpcError, *, attempts: int = 1) -> PaygateError:
    """The typed error for what gRPC raised (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    if isinstance(error, PaygateError):
        return error
    call: Any = error  # gRPC's raised errors are also its Call objects; the base class declares none of it

    def ask(name: str, default: Any) -> Any:
        method = getattr(call, name, None)
        return method() if callable(method) else default

    return error_from_status(
        ask("code", None) or grpc.StatusCode.UNKNOWN,
        ask("details", None) or "",
        ask("trailing_metadata", ()),
        ask("initial_metadata", ()),
        attempts=attempts,
        debug_error_string=ask("debug_error_string", None) or "",
    )
