"""JSON logs, one object per line, carrying the request id of the call being served.

Never log a secret, a signature or a card number: log ids, codes and amounts only.

A serving process whose event loop must not wait on a slow log reader (the gateway: one access line per call)
moves its writes to a thread with `write_behind()`: records are queued by the logging call and formatted and
written by a QueueListener (docs/decisions.md #116).
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# The most records a write-behind queue holds; past it records are dropped (and counted) rather than blocking.
WRITE_BEHIND_CAPACITY = 100_000


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process_name,
            "message": record.getMessage(),
        }
        # Stamped when the record was made (write_behind formats it later, on another thread), else the current one.
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def configure(process_name: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The JSON lines show none of these, and each costs a lookup in every LogRecord (docs/benchmarks.md).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # grpc and urllib chatter at INFO is noise for operators.
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every provider request line at INFO, query strings included (signed parameters, bill download
    # tokens): our own channel logs say what matters, without them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class _WriteBehindHandler(logging.handlers.QueueHandler):
    """Queues the record as it is — formatted by the listener's JsonFormatter, so the lines keep their one format —
    with what belongs to the moment it was made: the request id (a context variable of the logging task), the
    message with its arguments, and the exception text."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        setattr(record, "request_id", request_id_var.get())  # noqa: B010 - LogRecord has no such declared field
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            _WriteBehindHandler.dropped += 1  # a log reader that stalls must not stall the calls


def write_behind() -> logging.handlers.QueueListener:
    """Move the root logger's handlers behind a bounded queue and a listener thread; stop the listener (it writes
    what is queued) before the process exits."""
    root = logging.getLogger()
    records: queue.Queue[logging.LogRecord] = queue.Queue(WRITE_BEHIND_CAPACITY)
    listener = logging.handlers.QueueListener(records, *root.handlers, respect_handler_level=True)
    root.handlers[:] = [_WriteBehindHandler(records)]
    listener.start()
    return listener
