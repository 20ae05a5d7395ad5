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
