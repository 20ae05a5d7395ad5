"""Typed client errors (paygate/errors.py, docs/client.md "Errors"): every status becomes its class, with the
google.rpc details decoded, and still behaves as the grpc.RpcError that existing callers catch."""

from __future__ import annotations

import pickle
from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import paygate
from paygate import errors
from paygate.errors import PaygateError, error_from_status, from_rpc_error


def status_trailers(code: grpc.StatusCode, message: str, *details: object) -> tuple[tuple[str, str | bytes], ...]:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)  # type: ignore[arg-type]
        status.details.append(wrapped)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("x-paygate-worker", "worker-2"),
        ("x-request-id", "req-123"),
    )


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=seconds))
    return error_details_pb2.RetryInfo(retry_delay=delay)


EXPECTED_CLASSES = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
    grpc.StatusCode.INTERNAL: errors.Internal,
    grpc.StatusCode.UNKNOWN: PaygateError,
    grpc.StatusCode.DATA_LOSS: PaygateError,
}


@pytest.mark.parametrize(("code", "cls"), EXPECTED_CLASSES.items())
def test_each_code_has_its_class_and_stays_a_grpc_rpc_error(code: grpc.StatusCode, cls: type[PaygateError]) -> None:
    error = error_from_status(code, "nope", status_trailers(code, "nope"))
    assert type(error) is cls
    assert isinstance(error, grpc.RpcError) and isinstance(error, PaygateError)
    assert error.code() == code and error.details() == "nope"


def test_the_classes_are_reexported_from_the_package() -> None:
    for cls in {*EXPECTED_CLASSES.values(), errors.RateLimited}:
        assert getattr(paygate, cls.__name__) is cls


def test_bad_request_field_violations_error_info_and_response_metadata_are_decoded() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="order_id", description="must match [A-Za-z0-9_.:-]"),
            error_details_pb2.BadRequest.FieldViolation(field="amount_minor", description="must be at least 1"),
        ]
    )
    info = error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="paygate.v1", metadata={"fields": "2"})
    code = grpc.StatusCode.INVALID_ARGUMENT
    error = error_from_status(code, "2 bad fields", status_trailers(code, "2 bad fields", info, bad), attempts=1)
    assert isinstance(error, errors.InvalidArgument)
    assert (error.reason, error.domain, dict(error.metadata)) == ("INVALID_ARGUMENT", "paygate.v1", {"fields": "2"})
    assert [(v.field, v.description) for v in error.field_violations] == [
        ("order_id", "must match [A-Za-z0-9_.:-]"),
        ("amount_minor", "must be at least 1"),
    ]
    assert error.violations_by_field() == {
        "order_id": "must match [A-Za-z0-9_.:-]",
        "amount_minor": "must be at least 1",
    }
    assert (error.worker, error.request_id, error.retry_delay_s) == ("worker-2", "req-123", None)
    assert "INVALID_ARGUMENT: 2 bad fields" in str(error) and "req-123" in str(error)


def test_a_limit_that_says_when_to_come_back_is_rate_limited() -> None:
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED_KEY", domain="paygate.v1")
    error = error_from_status(code, "slow down", status_trailers(code, "slow down", info, retry_info(1.25)))
    assert isinstance(error, errors.RateLimited) and isinstance(error, errors.ResourceExhausted)
    assert error.retry_delay_s == 1.25 and error.reason == "RATE_LIMITED_KEY"


def test_grpc_status_helpers_still_read_the_error() -> None:
    code = grpc.StatusCode.ABORTED
    info = error_details_pb2.ErrorInfo(reason="REQUEST_IN_FLIGHT", domain="paygate.v1")
    error = error_from_status(code, "in flight", status_trailers(code, "in flight", info, retry_info(0.2)))
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.code == code.value[0] and len(status.details) == 2
    assert dict(error.trailing_metadata())["x-request-id"] == "req-123"


def test_missing_or_garbled_details_leave_a_plain_typed_error() -> None:
    plain = error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert isinstance(plain, errors.Unavailable) and plain.reason == "" and plain.field_violations == ()
    garbled = error_from_status(grpc.StatusCode.NOT_FOUND, "gone", (("grpc-status-details-bin", b"\xff\xff"),))
    assert isinstance(garbled, errors.NotFound) and garbled.reason == ""


def test_an_error_crosses_a_process_boundary_whole() -> None:
    code = grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo(reason="INSUFFICIENT_FUNDS", domain="paygate.v1")
    error = error_from_status(code, "poor", status_trailers(code, "poor", info), attempts=3)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is errors.FailedPrecondition
    assert (copy.code(), copy.details(), copy.reason, copy.attempts, copy.request_id) == (
        code,
        "poor",
        "INSUFFICIENT_FUNDS",
        3,
        "req-123",
    )


def test_a_typed_error_passes_through_unchanged() -> None:
    error = error_from_status(grpc.StatusCode.NOT_FOUND, "gone")
    assert from_rpc_error(error) is error
