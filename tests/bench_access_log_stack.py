"""The access log's cost in a real gateway (docs/benchmarks.md, "Access log"): `python -m tests.bench_access_log_stack`.

Starts `paygate serve --workers 1` twice, with PAYGATE_ACCESS_LOG on and off, sends the same signed GetBalance calls
(8 threads) and reads the gateway process's CPU time (utime + stime of /proc/PID/stat) around them: CPU per call does
not depend on how busy the rest of the machine is, as wall-clock throughput would. Prints one JSON object; not a test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack

CALLS = 4_000
THREADS = 8


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway_cpu_us_per_call(stack: Stack) -> float:
    key_id, secret = stack.create_key("bench")
    pid = stack.state()["children"]["gateway"]["pid"]
    with stack.client(key_id, secret) as client:
        request = pb.GetBalanceRequest(user_id="u-bench", currency="CNY")
        client.get_balance(request)  # warm: channel, key cache
        before = _cpu_s(pid)
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _: client.get_balance(request), range(CALLS)))
        return (_cpu_s(pid) - before) / CALLS * 1e6


def main() -> int:
    figures: dict[str, float] = {}
    for setting in ("on", "off"):
        with tempfile.TemporaryDirectory() as directory:
            stack = start_stack(Path(directory), workers=1, extra_env={"PAYGATE_ACCESS_LOG": setting})
            try:
                figures[f"gateway_cpu_us_per_call_access_log_{setting}"] = round(_gateway_cpu_us_per_call(stack), 1)
            finally:
                stack.stop()
    print(json.dumps({"calls": CALLS, "threads": THREADS, "load": os.getloadavg()[0], **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
