"""The one place where foreign exceptions (SQLAlchemy, redis) become domain errors for the wire."""

from __future__ import annotations

import logging

import redis
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from runtime.errors import PaygateError, Unavailable
from runtime.redis_ha import describe_error
from workers.ledger.accounts import LedgerInvariantError

log = logging.getLogger(__name__)


def translate(error: Exception, request_id: str) -> PaygateError:
    if isinstance(error, PaygateError):
        return error
    outage = unavailable_store(error)
    if outage is not None:
        store, cause = outage
        log.warning("%s unavailable: %s", store, cause)
        if store == "redis":
            return Unavailable("the lock store (Redis) is unreachable; retry with the same idempotency key")
        return Unavailable("the ledger database is unavailable; retry with the same idempotency key")
    if isinstance(error, (SQLAlchemyError, LedgerInvariantError)):
        log.exception("ledger failure")
    else:
        log.exception("unexpected failure")
    # A bug: say so without internals; the request id finds the stack trace in the worker's log.
    return PaygateError(f"internal error; report request id {request_id}")


def unavailable_store(error: Exception) -> tuple[str, str] | None:
    """("redis" | "database", a one-line cause) when `error` says a data store is unreachable — an outage to
    report in one line and retry, not a bug to trace — else None. The cause never quotes a statement, its
    parameters or a reply (they may carry data), only the type and the driver's code or connection message."""
    if isinstance(error, redis.RedisError):
        return "redis", describe_error(error)
    if isinstance(error, DBAPIError) and (error.connection_invalidated or _is_unavailable(error)):
        code = getattr(error.orig, "sqlstate", None) or next(iter(getattr(error.orig, "args", ())), None)
        return "database", f"{type(error.orig).__name__} ({code})"
    return None


def _is_unavailable(error: DBAPIError) -> bool:
    return isinstance(error, (OperationalError, InterfaceError))
