"""What one gateway access line costs (docs/benchmarks.md, "Access log"): `python -m tests.bench_access_log`.

Times `AccessLog.call` (in CPU time of the calling thread: the machine may be shared) — the record, the JSON
formatting of runtime/logs.py and the write — to a file handler, behind the gateway's write-behind queue (what its
event loop's thread pays while a listener thread formats and writes), with the listener stopped (the enqueue
alone), and with the access log switched off. Prints one
JSON object of microseconds per call; not a test, and no bound is asserted.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
import timeit
from pathlib import Path

import grpc

from gateway.access_log import AccessLog, CallNotes
from runtime import logs

CALLS = 10_000  # x 5 runs: fits the write-behind queue, so no record is dropped while timed


class _Context:
    """The one thing the access line reads from a grpc.aio context: the caller's address."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:53412"


def _per_call_us(access: AccessLog) -> float:
    """CPU time per call of the calling thread: on a machine shared with other work, CPU time is what the call
    costs, where wall time would include waiting for a core."""
    context = _Context()
    notes = CallNotes("key_0123456789abcdef", "orders-service", "worker-1")
    metadata = (("x-paygate-key-id", "key_0123456789abcdef"),)
    path = "/paygate.v1.PaymentGateway/CreatePayment"

    def one() -> None:
        access.call(path, grpc.StatusCode.OK, 0.004321, "req_0123456789abcdef", context, metadata, notes)  # type: ignore[arg-type]

    return min(timeit.repeat(one, timer=time.thread_time, number=CALLS, repeat=5)) / CALLS * 1e6


def main() -> int:
    logs.configure("gateway", "INFO")
    root = logging.getLogger()
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "access.log"
        file_handler = logging.FileHandler(target)
        file_handler.setFormatter(logs.JsonFormatter("gateway"))
        root.handlers[:] = [file_handler]
        direct = _per_call_us(AccessLog())
        listener = logs.write_behind()  # as the gateway runs: a thread formats and writes
        behind_loop = _per_call_us(AccessLog())
        listener.stop()
        enqueue_only = _per_call_us(AccessLog())  # what the event loop's thread itself pays: the listener is stopped
        off = _per_call_us(AccessLog(enabled=False))
        written = sum(1 for _ in target.open())
    figures = {
        "file_us": round(direct, 2),
        "write_behind_loop_thread_us": round(behind_loop, 2),
        "enqueue_only_us": round(enqueue_only, 2),
        "off_us": round(off, 3),
        "lines_written": written,
    }
    print(json.dumps({"python": sys.version.split()[0], "calls_per_run": CALLS, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
