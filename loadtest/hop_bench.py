"""Where the CPU of one call goes: a signed asyncio load through a real stack, with per-process CPU per call.

    python -m loadtest.hop_bench                       # GetBalance and QuotePrice, 32 calls in flight
    python -m loadtest.hop_bench --concurrency 64 --calls 20000

For each method it prints calls/s and the CPU milliseconds per call spent in the gateway, in all workers together
and in Redis (from /proc/<pid>/stat, so it is independent of how the two cores were shared). It compares the
hot path against itself over time; docs/benchmarks.md keeps the figures. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import grpc

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BODIES = {
    "GetBalance": pb.GetBalanceRequest(user_id="bench-user", currency="CNY").SerializeToString(),
    # Answers UNIMPLEMENTED today: a call that touches neither the database nor Redis in the worker.
    "QuotePrice": pb.QuotePriceRequest(list_price_minor=100, currency="CNY").SerializeToString(),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def load(target: str, key_id: str, secret: str, method: str, calls: int, concurrency: int) -> float:
    path = method_path(method)
    body = BODIES[method]
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(path)
        per_task = calls // concurrency

        async def run() -> None:
            for _ in range(per_task):
                try:
                    await call(body, metadata=signing.signed_metadata(key_id, secret, path, body), timeout=10)
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise

        started = time.perf_counter()
        await asyncio.gather(*(run() for _ in range(concurrency)))
        return per_task * concurrency / (time.perf_counter() - started)


def measure(stack: Stack, key: tuple[str, str], method: str, calls: int, concurrency: int) -> None:
    state = stack.state()
    pids = {
        "gateway": [state["children"]["gateway"]["pid"]],
        "workers": [c["pid"] for name, c in state["children"].items() if name.startswith("worker-")],
        "redis": [state["redis_pid"]] if state.get("redis_pid") else [],
    }
    before = {role: sum(cpu_seconds(p) for p in group) for role, group in pids.items()}
    rate = asyncio.run(load(stack.listen, *key, method, calls, concurrency))
    after = {role: sum(cpu_seconds(p) for p in group) for role, group in pids.items()}
    per_call = {role: (after[role] - before[role]) * 1000 / calls for role in pids}
    print(
        f"{method:>10}: {rate:7.0f} calls/s; CPU ms/call: gateway {per_call['gateway']:.3f}, "
        f"workers {per_call['workers']:.3f}, redis {per_call['redis']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=9600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paygate-hop-") as directory:
        stack = start_stack(Path(directory) / "stack", workers=args.workers, tls=False)
        try:
            key = stack.create_key("hop-bench")
            print(f"paygate serve --workers {args.workers}; {args.concurrency} calls in flight")
            for _ in range(args.rounds):
                for method in BODIES:
                    measure(stack, key, method, args.calls, args.concurrency)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
