"""End-to-end throughput benchmark: a real `paygate serve` and several client processes; prints figures.

    make bench                      # defaults: 2 workers, 4 client processes x 8 threads, 2,000 calls each mix
    python -m loadtest.bench --workers 2 --processes 4 --threads 8 --calls 4000

Figures go to stdout (and docs/benchmarks.md by hand); nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import start_stack


def _client_process(
    target: str, key_id: str, secret: str, mix: str, calls: int, threads: int
) -> tuple[float, float, list[float]]:
    """Run `calls` calls on `threads` threads; return (first start, last end) wall times and the latencies."""
    latencies: list[float] = []
    window: list[float] = []
    lock = threading.Lock()
    per_thread = calls // threads

    def run() -> None:
        own: list[float] = []
        user = f"b-{uuid.uuid4().hex[:10]}"
        with PaygateClient(target, key_id, secret) as client:
            if mix == "purchase":
                client.top_up(
                    pb.TopUpRequest(
                        order_id=f"t-{user}",
                        user_id=user,
                        amount_minor=10**12,
                        currency="CNY",
                        method=pb.PAYMENT_METHOD_SANDBOX,
                    )
                )
            with lock:
                window.append(time.time())
            for i in range(per_thread):
                started = time.perf_counter()
                if mix == "balance":
                    client.get_balance(pb.GetBalanceRequest(user_id=user, currency="CNY"))
                else:
                    client.create_payment(
                        pb.CreatePaymentRequest(
                            order_id=f"o-{user}-{i}",
                            user_id=user,
                            amount_minor=100,
                            currency="CNY",
                            method=pb.PAYMENT_METHOD_WALLET,
                            payee_id="creator-1",
                        )
                    )
                own.append(time.perf_counter() - started)
        with lock:
            latencies.extend(own)
            window.append(time.time())

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return min(window), max(window), latencies


def measure(target: str, key_id: str, secret: str, mix: str, processes: int, threads: int, calls: int) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = pool.starmap(
            _client_process, [(target, key_id, secret, mix, calls // processes, threads)] * processes
        )
    # From the first call of any client to the last: process start-up and set-up calls are not counted.
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    latencies = sorted(x for result in results for x in result[2])
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"{mix:>9}: {len(latencies):6d} calls in {elapsed:6.2f} s = {len(latencies) / elapsed:7.0f} calls/s; "
        f"latency p50 {quantiles[49] * 1000:6.2f} ms, p99 {quantiles[98] * 1000:6.2f} ms "
        f"({processes} processes x {threads} threads in flight)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2000, help="calls per mix, over all client processes")
    parser.add_argument("--database-url", default=None, help="PostgreSQL/MySQL URL instead of the SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paygate-bench-") as directory:
        stack = start_stack(Path(directory) / "stack", workers=args.workers, database_url=args.database_url, tls=False)
        try:
            key_id, secret = stack.create_key("bench")
            print(f"paygate serve --workers {args.workers} on {args.database_url or 'SQLite'}; target {stack.listen}")
            for mix in ("balance", "purchase"):
                measure(stack.listen, key_id, secret, mix, args.processes, args.threads, args.calls)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
