"""Paygate for callers: `pip install paygate` brings only this package's client side (docs/client.md).

`paygate.client.PaygateClient` (sync) and `paygate.aio.PaygateAsyncClient` (asyncio) sign every call, retry what is
safe to retry (`paygate.retry`) and raise typed errors (`paygate.errors`); `paygate.v1` holds the generated
protobuf/gRPC stubs, `paygate.signing` the request-signing scheme, `paygate.webhooks` the webhook signature check.
The server's packages (runtime, gateway, workers, stack) come with `pip install 'paygate[server]'`.
"""

from typing import TYPE_CHECKING

from paygate.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PaygateError,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from paygate.retry import DEFAULT_RETRY, NO_RETRY, RetryEvent, RetryPolicy

if TYPE_CHECKING:
    from paygate.aio import PaygateAsyncClient
    from paygate.client import PaygateClient

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PaygateAsyncClient",
    "PaygateClient",
    "PaygateError",
    "PermissionDenied",
    "RateLimited",
    "ResourceExhausted",
    "RetryEvent",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


def __getattr__(name: str) -> object:
    # The clients load the generated stubs; a server process importing `paygate.signing` should not pay for them.
    if name == "PaygateClient":
        from paygate.client import PaygateClient  # noqa: PLC0415

        return PaygateClient
    if name == "PaygateAsyncClient":
        from paygate.aio import PaygateAsyncClient  # noqa: PLC0415

        return PaygateAsyncClient
    raise AttributeError(f"module 'paygate' has no attribute {name!r}")
