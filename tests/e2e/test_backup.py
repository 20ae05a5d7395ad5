"""Back up and restore as docs/operations.md tells an operator to: `paygate db backup` of a live SQLite stack under a
purchase load, restored into a fresh data directory and served again; the PostgreSQL and MariaDB recipes
(`pg_dump -Fc` / `pg_restore`, `mariadb-dump --single-transaction`) on throwaway databases.

"Consistent" is checked against what the load saw: every purchase answered OK before the backup began is in the
copy, nothing the load had not yet sent is, and every wallet's balance is its top-up minus exactly the purchases
the copy holds — the state of one moment, not necessarily the last one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import (
    MYSQL_ENV,
    POSTGRES_ENV,
    REPO_ROOT,
    Stack,
    create_throwaway_database,
    drop_throwaway_database,
    start_stack,
    wait_until,
)

TOP_UP_MINOR = 1_000_000
PRICE_MINOR = 100
USERS = ("bk-u1", "bk-u2", "bk-u3", "bk-u4")


@dataclass
class PurchaseLoad:
    """Wallet purchases from a few threads until stopped, remembering which order ids were sent and answered."""

    stack: Stack
    key: tuple[str, str]
    prefix: str
    sent: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    refused: list[grpc.StatusCode] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, count: int = 2) -> None:
        self.threads = [threading.Thread(target=self._run, args=(index,), daemon=True) for index in range(count)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _run(self, index: int) -> None:
        with self.stack.client(*self.key) as client:
            for number in range(1_000_000):
                if self.stopping.is_set():
                    return
                order_id = f"{self.prefix}-{index}-{number}"
                with self.lock:
                    self.sent.append(order_id)
                try:
                    client.create_payment(purchase(order_id, USERS[(index + number) % len(USERS)]))
                except grpc.RpcError as error:
                    with self.lock:
                        self.refused.append(error.code())
                    continue
                with self.lock:
                    self.acked.append(order_id)


def purchase(order_id: str, user_id: str) -> pb.CreatePaymentRequest:
    return pb.CreatePaymentRequest(
        order_id=order_id,
        user_id=user_id,
        amount_minor=PRICE_MINOR,
        currency="CNY",
        method=pb.PAYMENT_METHOD_WALLET,
        payee_id="creator-bk",
    )


def fund_users(stack: Stack, key: tuple[str, str]) -> None:
    with stack.client(*key) as client:
        for user in USERS:
            client.top_up(
                pb.TopUpRequest(
                    order_id=f"top-{user}",
                    user_id=user,
                    amount_minor=TOP_UP_MINOR,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_SANDBOX,
                )
            )


def during_load(stack: Stack, key: tuple[str, str], take_backup: object) -> tuple[PurchaseLoad, set[str], set[str]]:
    """Run `take_backup()` in the middle of a purchase load; return the load, what was answered OK before the
    backup began and what had been sent when it ended."""
    load = PurchaseLoad(stack, key, prefix="bk")
    load.start()
    try:
        wait_until(lambda: load.acked_count() >= 30, attempts=1200, what="purchases before the backup")
        with load.lock:
            acked_before = set(load.acked)
        take_backup()  # type: ignore[operator]
        with load.lock:
            sent_by_end = set(load.sent)
        after = load.acked_count()
        wait_until(lambda: load.acked_count() >= after + 30, attempts=1200, what="purchases after the backup")
    finally:
        load.stop()
    assert set(load.refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}, load.refused
    return load, acked_before, sent_by_end


def assert_one_moment(rows: list[tuple[str, str]], wallets: dict[str, int], acked: set[str], sent: set[str]) -> int:
    """`rows` (order id, user) are the copy's settled purchases, `wallets` its wallet balances by user."""
    orders = {order_id for order_id, _ in rows}
    assert acked <= orders, f"{len(acked - orders)} purchases answered OK before the backup are missing"
    assert orders <= sent, f"{len(orders - sent)} purchases in the copy were never sent before it ended"
    for user in USERS:
        bought = sum(1 for _, buyer in rows if buyer == user)
        assert wallets[user] == TOP_UP_MINOR - PRICE_MINOR * bought, user
    return len(orders)


def sqlite_snapshot(path: Path) -> tuple[list[tuple[str, str]], dict[str, int]]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT order_id, user_id FROM payments WHERE payment_type = 'purchase' AND status = 'succeeded'"
        ).fetchall()
        wallets = dict(connection.execute("SELECT subject, balance_minor FROM accounts WHERE kind = 'wallet'"))
    return rows, wallets


def paygate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(tmp_path / "live", workers=2)
    try:
        yield stack
    finally:
        assert stack.stop() == 0


def test_sqlite_online_backup_under_load_restores_into_a_fresh_data_dir(live: Stack, tmp_path: Path) -> None:
    key = live.create_key("backup")
    fund_users(live, key)
    backup = tmp_path / "backups" / "paygate-1.sqlite3"
    backup.parent.mkdir()
    made: list[subprocess.CompletedProcess[str]] = []
    load, acked_before, sent_by_end = during_load(live, key, lambda: made.append(live.cli("db", "backup", str(backup))))
    assert made[0].returncode == 0, made[0].stderr
    assert "integrity ok" in made[0].stdout
    assert not list(backup.parent.glob(".*partial")), "the temporary copy was left behind"

    rows, wallets = sqlite_snapshot(backup)
    copied = assert_one_moment(rows, wallets, acked_before, sent_by_end)
    assert copied < len(load.acked), "the stack kept taking purchases after the backup"

    # The restore of docs/operations.md: the file and the master key into a fresh data directory.
    fresh = tmp_path / "restored"
    fresh.mkdir(mode=0o700)
    shutil.copyfile(backup, fresh / "paygate.sqlite3")
    shutil.copyfile(live.data_dir / "master.key", fresh / "master.key")
    verified = paygate(live.env, "ledger", "verify", "--data-dir", str(fresh))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert paygate(live.env, "audit", "verify", "--data-dir", str(fresh)).returncode == 0

    restored = start_stack(fresh, workers=1)
    try:
        with restored.client(*key) as client:  # the key's secret opens: the master key came along
            kept = rows[0][0]
            replayed = client.create_payment(purchase(kept, dict(rows)[kept]))
            assert replayed.order_id == kept and replayed.status == pb.PAYMENT_STATUS_SUCCEEDED
            balance = client.get_balance(pb.GetBalanceRequest(user_id=USERS[0], currency="CNY"))
            assert balance.available_minor == wallets[USERS[0]], "a replay moved money again"
            # The restored stack's Redis is empty: its fence counters start below the wallets' (docs/operations.md).
            client.create_payment(purchase("bk-after-restore", USERS[0]))
            balance = client.get_balance(pb.GetBalanceRequest(user_id=USERS[0], currency="CNY"))
            assert balance.available_minor == wallets[USERS[0]] - PRICE_MINOR
    finally:
        assert restored.stop() == 0
    assert paygate(live.env, "ledger", "verify", "--data-dir", str(fresh)).returncode == 0


def test_a_copy_restored_without_its_master_key_fails_the_audit_check(tmp_path: Path) -> None:
    """What docs/operations.md warns of: dev mode makes a new master key, under which nothing old opens."""
    stack = start_stack(tmp_path / "keyed", workers=1)
    try:
        stack.create_key("audited")  # one audit entry, chained under this stack's master key
        assert stack.cli("db", "backup", str(tmp_path / "copy.sqlite3")).returncode == 0
    finally:
        assert stack.stop() == 0
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(tmp_path / "copy.sqlite3", alone / "paygate.sqlite3")
    result = paygate(stack.env, "audit", "verify", "--data-dir", str(alone))
    assert result.returncode == 1
    assert "unknown_key" in result.stdout


def test_backup_refuses_to_overwrite_and_names_the_dump_tool_of_other_databases(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    existing = tmp_path / "existing.sqlite3"
    existing.write_bytes(b"keep me")
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "paygate.sqlite3").close()
    refused = paygate(env, "db", "backup", str(existing), "--data-dir", str(tmp_path / "data"))
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert existing.read_bytes() == b"keep me"
    missing = paygate(env, "db", "backup", str(tmp_path / "x.sqlite3"), "--data-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no database" in missing.stderr
    assert not (tmp_path / "none" / "paygate.sqlite3").exists(), "a missing database was created"

    postgres = {**env, "PAYGATE_DATABASE_URL": "postgresql://pg:hunter2@db.internal:5433/paygate?sslmode=require"}
    told = paygate(postgres, "db", "backup", "/backups/p.dump", "--data-dir", str(tmp_path / "data"))
    assert told.returncode == 2
    assert "pg_dump --format=custom --file=/backups/p.dump --dbname=" in told.stdout
    assert "postgresql://pg@db.internal:5433/paygate?sslmode=require" in told.stdout
    mariadb = {**env, "PAYGATE_DATABASE_URL": "mysql://my:hunter2@db.internal/paygate"}
    told = paygate(mariadb, "db", "backup", "/backups/p.sql", "--data-dir", str(tmp_path / "data"))
    assert told.returncode == 2 and "mariadb-dump --single-transaction" in told.stdout
    assert "hunter2" not in told.stdout + told.stderr + refused.stderr


def _server_database(variable: str, tool: str) -> str:
    server = os.environ.get(variable)
    if not server:
        pytest.skip(f"{variable} is not set")
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    return server


def _printed_command(stack: Stack, target: Path) -> str:
    """The dump command `paygate db backup` prints for this stack's database (docs/operations.md)."""
    told = stack.cli("db", "backup", str(target))
    assert told.returncode == 2, told.stderr
    return told.stdout.strip().splitlines()[-1].strip()


def _database_snapshot(url: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT order_id, user_id FROM payments WHERE payment_type = 'purchase' AND status = 'succeeded'")
            ).all()
            wallets = connection.execute(text("SELECT subject, balance_minor FROM accounts WHERE kind = 'wallet'"))
            return [(str(o), str(u)) for o, u in rows], {str(s): int(b) for s, b in wallets}
    finally:
        engine.dispose()


@pytest.mark.stress  # a load, a dump and a restore on a database server: over a minute each
def test_postgresql_pg_dump_and_pg_restore_give_a_copy_that_verifies(tmp_path: Path) -> None:
    server = _server_database(POSTGRES_ENV, "pg_dump")
    source = create_throwaway_database(server)
    url = make_url(source)
    restored_url = url.set(database=f"paygate_t_{uuid.uuid4().hex[:12]}").render_as_string(hide_password=False)
    tool_env = {**os.environ, "PGPASSWORD": url.password or ""}
    dump = tmp_path / "paygate.dump"
    stack = start_stack(tmp_path / "pg", workers=2, database_url=source)
    try:
        key = stack.create_key("backup")
        fund_users(stack, key)
        command = _printed_command(stack, dump)
        assert command.startswith("pg_dump --format=custom")

        def take() -> None:
            subprocess.run(shlex.split(command), env=tool_env, check=True, timeout=120)

        _, acked_before, sent_by_end = during_load(stack, key, take)
    finally:
        assert stack.stop() == 0
    try:
        # docs/operations.md, "PostgreSQL": createdb, then pg_restore --no-owner into it.
        name = str(make_url(restored_url).database)
        where = [f"--host={url.host}", f"--port={url.port or 5432}", f"--username={url.username}"]
        subprocess.run(["createdb", *where, name], env=tool_env, check=True, timeout=120)
        restore = ["pg_restore", "--no-owner", *where, f"--dbname={name}", str(dump)]
        subprocess.run(restore, env=tool_env, check=True, timeout=120)
        rows, wallets = _database_snapshot(restored_url)
        assert_one_moment(rows, wallets, acked_before, sent_by_end)
        verified = paygate({**stack.env, "PAYGATE_DATABASE_URL": restored_url}, "ledger", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        drop_throwaway_database(source)
        drop_throwaway_database(restored_url)


def _engines(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text("SELECT DISTINCT engine FROM information_schema.tables WHERE table_schema = DATABASE()")
            return {str(row[0]) for row in connection.execute(query)}
    finally:
        engine.dispose()


@pytest.mark.stress  # a load, a dump and a restore on a database server: over a minute each
def test_mariadb_dump_with_single_transaction_gives_a_copy_that_verifies(tmp_path: Path) -> None:
    server = _server_database(MYSQL_ENV, "mariadb-dump")
    source = create_throwaway_database(server)
    url = make_url(source)
    restored_url = url.set(database=f"paygate_t_{uuid.uuid4().hex[:12]}").render_as_string(hide_password=False)
    tool_env = {**os.environ, "MYSQL_PWD": url.password or ""}
    dump = tmp_path / "paygate.sql"
    stack = start_stack(tmp_path / "maria", workers=2, database_url=source)
    try:
        key = stack.create_key("backup")
        fund_users(stack, key)
        command = _printed_command(stack, dump)
        assert command.startswith("mariadb-dump --single-transaction")

        def take() -> None:
            subprocess.run(["sh", "-c", command], env=tool_env, check=True, timeout=120, cwd=REPO_ROOT)

        _, acked_before, sent_by_end = during_load(stack, key, take)
    finally:
        assert stack.stop() == 0
    try:
        # docs/operations.md, "MySQL / MariaDB": a database with the binary collation, then the dump into it.
        name = str(make_url(restored_url).database)
        client = ["mariadb", f"--host={url.host}", f"--port={url.port or 3306}", f"--user={url.username}"]
        create = f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        subprocess.run([*client, "-e", create], env=tool_env, check=True, timeout=120)
        with dump.open("rb") as sql:
            subprocess.run([*client, name], stdin=sql, env=tool_env, check=True, timeout=120)
        assert _engines(restored_url) == {"InnoDB"}, "--single-transaction is a consistent read only on InnoDB"
        rows, wallets = _database_snapshot(restored_url)
        assert_one_moment(rows, wallets, acked_before, sent_by_end)
        verified = paygate({**stack.env, "PAYGATE_DATABASE_URL": restored_url}, "ledger", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        drop_throwaway_database(source)
        drop_throwaway_database(restored_url)
