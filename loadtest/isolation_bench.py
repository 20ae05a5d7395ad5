"""One hanging channel against everyone else, in figures: wallet purchases and Alipay payments timed while WeChat
Pay answers normally, then while it hangs and learners keep trying it. Prints a table; asserts nothing.

    python -m loadtest.isolation_bench [--calls 400] [--threads 8] [--hammer-threads 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx

from paygate.client import PaygateClient
from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack


def _timed_calls(
    client: PaygateClient, method: int, user: str, calls: int, threads: int, refused: Counter[str]
) -> list[float]:
    """Latencies of the calls that were answered; refusals (a busy channel) are counted, not timed."""

    def one(index: int) -> float | None:
        started = time.perf_counter()
        try:
            client.create_payment(
                pb.CreatePaymentRequest(
                    order_id=f"b-{method}-{uuid.uuid4().hex[:10]}-{index}",
                    user_id=user,
                    amount_minor=100,
                    currency="CNY",
                    method=method,  # type: ignore[arg-type]
                    payee_id="creator-bench",
                )
            )
        except grpc.RpcError as error:
            refused[error.code().name] += 1
            return None
        return time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [latency for latency in pool.map(one, range(calls)) if latency is not None]


def _hammer(client: PaygateClient, stop: threading.Event, outcomes: Counter[str]) -> None:
    while not stop.is_set():
        try:
            payment = client.create_payment(
                pb.CreatePaymentRequest(
                    order_id=f"h-{uuid.uuid4().hex}",
                    user_id="learner-hammer",
                    amount_minor=100,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_WECHAT_PAY,
                )
            )
            outcomes[pb.PaymentStatus.Name(payment.status)] += 1
        except grpc.RpcError as error:
            outcomes[error.code().name] += 1


def _figures(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )


def _phase(stack: Stack, client: PaygateClient, args: argparse.Namespace, hanging: bool) -> None:
    sim = f"http://{stack.sim_listen}/control/misbehave/wechatpay"
    httpx.post(sim, json={"clear": True, "timeout": hanging}, timeout=10)
    stop, outcomes = threading.Event(), Counter[str]()
    hammers = [threading.Thread(target=_hammer, args=(client, stop, outcomes)) for _ in range(args.hammer_threads)]
    for thread in hammers:
        thread.start()
    time.sleep(1)  # let the WeChat attempts pile up first
    refused: Counter[str] = Counter()
    wallet = _timed_calls(client, pb.PAYMENT_METHOD_WALLET, "learner-bench", args.calls, args.threads, refused)
    # Alipay at the concurrency its bound allows: 4 calls in flight per worker, 2 workers.
    alipay = _timed_calls(client, pb.PAYMENT_METHOD_ALIPAY, "learner-bench", args.calls // 4, 4, refused)
    stop.set()
    for thread in hammers:
        thread.join()
    label = "WeChat Pay hanging " if hanging else "WeChat Pay answering"
    print(f"{label} | wallet purchases ({len(wallet)}): {_figures(wallet)}")
    print(f"{label} | Alipay payments ({len(alipay)}):  {_figures(alipay)}")
    print(f"{label} | WeChat Pay attempts meanwhile: {dict(outcomes)}; wallet/Alipay refusals: {dict(refused)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--hammer-threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isolation-bench-") as directory:
        stack = start_stack(
            Path(directory),
            workers=2,
            channels=True,
            extra_env={"PAYGATE_CHANNEL_READ_TIMEOUT_S": "3", "PAYGATE_CHANNEL_BREAKER_OPEN_S": "30"},
        )
        try:
            key_id, secret = stack.create_key("bench")
            # No client retries: the bench counts each refusal of a busy channel, which a retry would hide.
            client = PaygateClient(
                stack.listen, key_id, secret, timeout_s=30, root_certificates=stack.ca_file, retry=NO_RETRY
            )
            with client:
                client.top_up(
                    pb.TopUpRequest(
                        order_id=f"fill-{uuid.uuid4().hex[:8]}",
                        user_id="learner-bench",
                        amount_minor=10**10,
                        currency="CNY",
                        method=pb.PAYMENT_METHOD_SANDBOX,
                    )
                )
                _phase(stack, client, args, hanging=False)
                _phase(stack, client, args, hanging=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
