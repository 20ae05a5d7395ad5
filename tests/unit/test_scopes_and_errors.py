from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from paygate.scopes import METHOD_SCOPES, allows, method_path, parse_scopes
from paygate.v1 import payment_gateway_pb2 as pb
from runtime import errors


def test_every_rpc_of_the_service_has_a_scope() -> None:
    methods = set(pb.DESCRIPTOR.services_by_name["PaymentGateway"].methods_by_name)
    assert methods == set(METHOD_SCOPES)


def test_scopes() -> None:
    assert allows(("*",), method_path("Transfer"))
    assert allows(("payments:write",), method_path("TopUp"))
    assert not allows(("payments:read",), method_path("TopUp"))
    assert not allows(("*",), "/paygate.v1.PaymentGateway/Nope")
    assert parse_scopes("payments:read, balances:read,payments:read") == ("balances:read", "payments:read")
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("payments:read,root")
    with pytest.raises(ValueError, match="at least one"):
        parse_scopes(" , ")


def _status(error: errors.PaygateError) -> status_pb2.Status:
    rpc = errors.to_rpc_status(error)
    details = dict(rpc.trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(details)


def test_invalid_argument_carries_field_violations() -> None:
    error = errors.InvalidArgument([errors.FieldViolation("amount_minor", "must be positive")])
    rpc = errors.to_rpc_status(error)
    assert rpc.code == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(error)
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("amount_minor", "must be positive")]


def test_a_request_wrong_everywhere_gets_a_bounded_message_and_every_violation_in_details() -> None:
    violations = [errors.FieldViolation(f"field_{n}", "must be 1-64 characters of A-Z a-z 0-9 " * 2) for n in range(40)]
    error = errors.InvalidArgument(violations)
    message = str(error)
    assert len(message) <= errors.MAX_SUMMARY_CHARS + 200
    assert (
        message.startswith("invalid request: field_0: ")
        and "more (every one is in the google.rpc.BadRequest" in message
    )
    shown = message.count("field_")
    assert 1 <= shown < 40 and f"and {40 - shown} more" in message
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in _status(error).details)
    assert [v.field for v in bad_request.field_violations] == [f"field_{n}" for n in range(40)]
    assert "more" not in str(errors.InvalidArgument(violations[:2]))  # a short list is shown whole


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (errors.InsufficientFunds("x"), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"),
        (errors.RequestInFlight("x"), grpc.StatusCode.ABORTED, "REQUEST_IN_FLIGHT"),
        (errors.LockContention("x"), grpc.StatusCode.ABORTED, "LOCK_CONTENTION"),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    ],
)
def test_each_domain_error_maps_to_its_code_and_reason(
    error: errors.PaygateError, code: grpc.StatusCode, reason: str
) -> None:
    assert errors.to_rpc_status(error).code == code
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in _status(error).details)
    assert (info.reason, info.domain) == (reason, "paygate.v1")


def test_retryable_conflicts_carry_a_retry_delay() -> None:
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in _status(errors.RequestInFlight("busy")).details)
    assert retry.retry_delay.ToMilliseconds() > 0
