"""What operators rely on: /metrics across processes, the keys CLI, clean shutdown with calls in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygate.client import PaygateClient
from paygate.retry import NO_RETRY
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack, wait_until


def scrape(stack: Stack) -> str:
    with urllib.request.urlopen(f"http://{stack.metrics_listen}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_cover_every_process(stack: Stack, client: PaygateClient) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    client.top_up(
        pb.TopUpRequest(
            order_id=f"o-{user}", user_id=user, amount_minor=1_000, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    for i in range(6):
        client.create_payment(
            pb.CreatePaymentRequest(
                order_id=f"p-{user}-{i}", user_id=user, amount_minor=10, currency="CNY", method=pb.PAYMENT_METHOD_WALLET
            )
        )
    text = scrape(stack)
    handled = re.search(
        r'grpc_server_handled_total\{grpc_code="OK",grpc_method="CreatePayment",'
        r'grpc_service="paygate.v1.PaymentGateway",grpc_type="unary"\} (\d+)',
        text,
    )
    assert handled and int(handled.group(1)) >= 6
    assert 'grpc_server_handling_seconds_bucket{grpc_method="CreatePayment"' in text
    workers_seen = set(re.findall(r'paygate_worker_requests_total\{[^}]*worker="(worker-\d)"', text))
    assert len(workers_seen) >= 2  # samples from several worker processes, aggregated on one endpoint
    assert re.search(r'paygate_lock_wait_seconds_count\{outcome="acquired"\} [1-9]', text)
    assert "paygate_payments_total" in text


def test_health_service_reports_serving(stack: Stack) -> None:
    with stack.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "paygate.v1.PaymentGateway"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_keys_cli_create_list_revoke(stack: Stack) -> None:
    created = stack.cli("keys", "create", "--name", "billing", "--scopes", "payments:read,balances:read", "--json")
    assert created.returncode == 0, created.stderr
    lines = [line for line in created.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # exactly one JSON object on stdout
    key = json.loads(lines[0])
    assert key["key_id"].startswith("key_") and key["secret"].startswith("sk_")
    assert key["scopes"] == ["balances:read", "payments:read"]

    listed = json.loads(stack.cli("keys", "list", "--json").stdout)
    mine = [k for k in listed["keys"] if k["key_id"] == key["key_id"]]
    assert mine and mine[0]["revoked_at"] is None
    assert key["secret"] not in json.dumps(listed)

    # Secrets are encrypted at rest: the clear secret appears nowhere in the database file.
    database = stack.data_dir / "paygate.sqlite3"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT * FROM api_keys").fetchall()
    assert key["secret"] not in repr(rows)

    assert stack.cli("keys", "revoke", key["key_id"]).returncode == 0
    again = stack.cli("keys", "revoke", key["key_id"])
    assert again.returncode == 1 and "no active key" in again.stderr
    listed = json.loads(stack.cli("keys", "list", "--json").stdout)
    assert next(k for k in listed["keys"] if k["key_id"] == key["key_id"])["revoked_at"] is not None


def test_keys_cli_refuses_bad_input(stack: Stack) -> None:
    bad_scope = stack.cli("keys", "create", "--name", "x", "--scopes", "root")
    assert bad_scope.returncode == 2 and "unknown scope" in bad_scope.stderr
    bad_name = stack.cli("keys", "create", "--name", "has space")
    assert bad_name.returncode == 2 and "name" in bad_name.stderr


def test_sigterm_drains_in_flight_calls_and_exits_cleanly(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "drain", workers=2)
    key_id, secret = stack.create_key("drain")
    outcomes: dict[str, grpc.StatusCode] = {}
    lock = threading.Lock()
    started = threading.Barrier(5)

    def caller(index: int) -> None:
        # No client retries: each outcome is one attempt's, refused at the door or answered.
        with stack.client(key_id, secret, retry=NO_RETRY) as client:
            for i in range(30):
                if i == 1:
                    # One call done (its TLS connection up): only now may the stop begin, so calls are in flight.
                    started.wait()
                order_id = f"d-{index}-{i}"
                try:
                    client.top_up(
                        pb.TopUpRequest(
                            order_id=order_id,
                            user_id=f"u-{index}",
                            amount_minor=1,
                            currency="CNY",
                            method=pb.PAYMENT_METHOD_SANDBOX,
                        )
                    )
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                with lock:
                    outcomes[order_id] = code

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    code = stack.stop()
    for thread in threads:
        thread.join()
    assert code == 0
    with sqlite3.connect(stack.data_dir / "paygate.sqlite3") as connection:
        applied = {row[0] for row in connection.execute("SELECT order_id FROM payments")}
    succeeded = {order_id for order_id, status in outcomes.items() if status == grpc.StatusCode.OK}
    # Drained, not cut: every call that got in finished and answered OK; every other one was refused at the
    # door (UNAVAILABLE, or CANCELLED by gRPC while the server closes) and moved no money.
    assert len(succeeded) >= 4, "every caller's first call completes before the shutdown begins"
    assert applied == succeeded
    assert set(outcomes.values()) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    log = stack.log()
    assert "gateway draining" in log and '"message": "stopped"' in log


def test_serve_refuses_a_busy_port_with_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stack",
            "serve",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            stack.metrics_listen,
            "--data-dir",
            str(tmp_path / "busy"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=stack.env,
    )
    assert result.returncode == 2
    assert "cannot serve metrics" in result.stderr + result.stdout


def test_losing_the_embedded_redis_is_unavailable_then_heals(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "redis-loss", workers=2)
    try:
        key_id, secret = stack.create_key("redis-loss")
        with stack.client(key_id, secret) as client:
            client.top_up(
                pb.TopUpRequest(
                    order_id="rl-top",
                    user_id="u-rl",
                    amount_minor=10_000,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
            )
            outcomes: list[grpc.StatusCode] = []

            def purchase() -> bool:
                try:
                    client.create_payment(
                        pb.CreatePaymentRequest(
                            order_id=f"rl-{len(outcomes)}",
                            user_id="u-rl",
                            amount_minor=100,
                            currency="CNY",
                            method=pb.PAYMENT_METHOD_WALLET,
                        )
                    )
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    outcomes.append(error.code())
                return outcomes[-1] == grpc.StatusCode.OK

            assert purchase()
            old_pid = stack.state()["redis_pid"]
            os.kill(old_pid, signal.SIGKILL)

            def restarted() -> bool:
                purchase()  # keep calling through the outage
                return stack.state()["redis_pid"] not in (None, old_pid)

            # The supervisor restarts Redis; the fence counters it forgot heal from the ledger.
            wait_until(restarted, attempts=200, what="the supervisor restarting Redis")
            wait_until(purchase, attempts=200, what="purchases working again after losing Redis")
            assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, outcomes  # never UNKNOWN
            balance = client.get_balance(pb.GetBalanceRequest(user_id="u-rl", currency="CNY")).available_minor
            assert balance == 10_000 - 100 * outcomes.count(grpc.StatusCode.OK)  # each OK charged once, no more
    finally:
        assert stack.stop() == 0
