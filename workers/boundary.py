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
    if isinstance(error, redis.RedisError):
        log.warning("redis unavailable: %s", describe_error(error))
        return Unavailable("the lock store (Redis) is unreachable; retry with the same idempotency key")
    if isinstance(error, DBAPIError) and (error.connection_invalidated or _is_unavailable(error)):
        code = getattr(error.orig, "sqlstate", None) or next(iter(getattr(error.orig, "args", ())), None)
        log.warning("database unavailable: %s (%s)", type(error.orig).__name__, code)
        return Unavailable("the ledger database is unavailable; retry with the same idempotency key")
    if isinstance(error, (SQLAlchemyError, LedgerInvariantError)):
        log.exception("ledger failure")
    else:
        log.exception("unexpected failure")
    # A bug: say so without internals; the request id finds the stack trace in the worker's log.
    return PaygateError(f"internal error; report request id {request_id}")


def _is_unavailable(error: DBAPIError) -> bool:
    return isinstance(error, (OperationalError, InterfaceError))
