"""The simulator's state in one SQLite file (WAL): orders, refunds, notifications and their delivery attempts,
misbehaviour settings, card tokens and idempotency keys. A restart loses nothing.

Every call runs on the event loop's thread; statements are short, so nothing is awaited in between.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, out_trade_no TEXT NOT NULL,
    trade_no TEXT NOT NULL UNIQUE, amount INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,
    paid_amount INTEGER NOT NULL DEFAULT 0, notify_url TEXT NOT NULL DEFAULT '', pay_at REAL,
    created_at REAL NOT NULL, paid_at REAL, closed_at REAL, fail_code TEXT, extra TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS orders_by_out ON orders(channel, out_trade_no);
CREATE INDEX IF NOT EXISTS orders_due ON orders(pay_at) WHERE pay_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, order_id INTEGER NOT NULL,
    refund_no TEXT NOT NULL UNIQUE, out_refund_no TEXT NOT NULL, amount INTEGER NOT NULL, status TEXT NOT NULL,
    notify_url TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, complete_at REAL, done_at REAL,
    processed INTEGER NOT NULL DEFAULT 0, extra TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS refunds_by_out ON refunds(channel, out_refund_no);
CREATE INDEX IF NOT EXISTS refunds_by_order ON refunds(order_id);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, order_id INTEGER NOT NULL, event TEXT NOT NULL,
    url TEXT NOT NULL, content_type TEXT NOT NULL, body TEXT NOT NULL, headers TEXT NOT NULL,
    flags TEXT NOT NULL DEFAULT '[]', status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL, created_at REAL NOT NULL, delivered_at REAL, last_error TEXT);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_at);
CREATE INDEX IF NOT EXISTS notifications_by_order ON notifications(order_id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, notification_id INTEGER NOT NULL, at REAL NOT NULL,
    http_status INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS misbehaviour (channel TEXT PRIMARY KEY, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, last4 TEXT NOT NULL, brand TEXT NOT NULL, exp_month INTEGER NOT NULL,
    exp_year INTEGER NOT NULL, outcome TEXT NOT NULL, created_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
"""

MAX_IDEMPOTENCY_KEYS = 10_000


@dataclass
class Order:
    id: int
    channel: str
    out_trade_no: str
    trade_no: str
    amount: int
    currency: str
    status: str  # pending | paid | failed | closed
    paid_amount: int
    notify_url: str
    pay_at: float | None
    created_at: float
    paid_at: float | None
    closed_at: float | None
    fail_code: str | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Refund:
    id: int
    channel: str
    order_id: int
    refund_no: str
    out_refund_no: str
    amount: int
    status: str  # pending | succeeded | failed
    notify_url: str
    created_at: float
    complete_at: float | None
    done_at: float | None
    processed: int
    extra: dict[str, Any] = field(default_factory=dict)


def _order(row: sqlite3.Row | None) -> Order | None:
    if row is None:
        return None
    values = dict(row)
    values["extra"] = json.loads(values["extra"])
    return Order(**values)


def _refund(row: sqlite3.Row | None) -> Refund | None:
    if row is None:
        return None
    values = dict(row)
    values["extra"] = json.loads(values["extra"])
    return Refund(**values)


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    as_json = ("extra", "headers", "flags")
    return {k: json.dumps(v, ensure_ascii=False) if k in as_json else v for k, v in values.items()}


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        values = _encode(values)
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - table and columns are ours
        cursor = self.db.execute(sql, tuple(values.values()))
        return int(cursor.lastrowid or 0)

    def _update(self, table: str, row_id: int, values: dict[str, Any]) -> None:
        values = _encode(values)
        assignments = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*values.values(), row_id))  # noqa: S608

    # orders
    def create_order(self, **values: Any) -> Order:
        values.setdefault("extra", {})
        order_id = self._insert("orders", values)
        order = self.order(order_id)
        assert order is not None
        return order

    def order(self, order_id: int) -> Order | None:
        return _order(self.db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone())

    def order_by_out(self, channel: str, out_trade_no: str) -> Order | None:
        sql = "SELECT * FROM orders WHERE channel = ? AND out_trade_no = ? ORDER BY id DESC LIMIT 1"
        return _order(self.db.execute(sql, (channel, out_trade_no)).fetchone())

    def order_by_trade_no(self, channel: str, trade_no: str) -> Order | None:
        sql = "SELECT * FROM orders WHERE channel = ? AND trade_no = ?"
        return _order(self.db.execute(sql, (channel, trade_no)).fetchone())

    def orders_by_out(self, channel: str, out_trade_no: str, limit: int = 100) -> list[Order]:
        sql = "SELECT * FROM orders WHERE channel = ? AND out_trade_no = ? ORDER BY id LIMIT ?"
        return [o for o in map(_order, self.db.execute(sql, (channel, out_trade_no, limit))) if o]

    def update_order(self, order: Order, **values: Any) -> Order:
        self._update("orders", order.id, values)
        fresh = self.order(order.id)
        assert fresh is not None
        return fresh

    def orders(self, channel: str | None, limit: int) -> list[Order]:
        if channel:
            rows = self.db.execute("SELECT * FROM orders WHERE channel = ? ORDER BY id DESC LIMIT ?", (channel, limit))
        else:
            rows = self.db.execute("SELECT * FROM orders ORDER BY id DESC LIMIT ?", (limit,))
        return [o for o in map(_order, rows) if o]

    def due_orders(self, now: float, limit: int) -> list[Order]:
        sql = "SELECT * FROM orders WHERE pay_at IS NOT NULL AND pay_at <= ? AND status = 'pending' LIMIT ?"
        return [o for o in map(_order, self.db.execute(sql, (now, limit))) if o]

    def paid_between(self, channel: str, start: float, end: float, limit: int = 10000) -> list[Order]:
        sql = "SELECT * FROM orders WHERE channel = ? AND paid_at >= ? AND paid_at < ? ORDER BY paid_at, id LIMIT ?"
        return [o for o in map(_order, self.db.execute(sql, (channel, start, end, limit))) if o]

    # refunds
    def create_refund(self, **values: Any) -> Refund:
        values.setdefault("extra", {})
        refund = self.refund(self._insert("refunds", values))
        assert refund is not None
        return refund

    def refund(self, refund_id: int) -> Refund | None:
        return _refund(self.db.execute("SELECT * FROM refunds WHERE id = ?", (refund_id,)).fetchone())

    def refund_by_out(self, channel: str, out_refund_no: str) -> Refund | None:
        sql = "SELECT * FROM refunds WHERE channel = ? AND out_refund_no = ? ORDER BY id DESC LIMIT 1"
        return _refund(self.db.execute(sql, (channel, out_refund_no)).fetchone())

    def refund_by_no(self, channel: str, refund_no: str) -> Refund | None:
        sql = "SELECT * FROM refunds WHERE channel = ? AND refund_no = ?"
        return _refund(self.db.execute(sql, (channel, refund_no)).fetchone())

    def refunds_of(self, order_id: int, limit: int = 100) -> list[Refund]:
        sql = "SELECT * FROM refunds WHERE order_id = ? ORDER BY id LIMIT ?"
        return [r for r in map(_refund, self.db.execute(sql, (order_id, limit))) if r]

    def refunded(self, order_id: int) -> int:
        """Refunded or being refunded (not failed), in minor units."""
        sql = "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = ? AND status != 'failed'"
        return int(self.db.execute(sql, (order_id,)).fetchone()[0])

    def update_refund(self, refund: Refund, **values: Any) -> Refund:
        self._update("refunds", refund.id, values)
        fresh = self.refund(refund.id)
        assert fresh is not None
        return fresh

    def due_refunds(self, now: float, limit: int) -> list[Refund]:
        sql = "SELECT * FROM refunds WHERE processed = 0 AND complete_at <= ? ORDER BY id LIMIT ?"
        return [r for r in map(_refund, self.db.execute(sql, (now, limit))) if r]

    def refunded_between(self, channel: str, start: float, end: float, limit: int = 10000) -> list[Refund]:
        sql = (
            "SELECT * FROM refunds WHERE channel = ? AND status = 'succeeded' AND done_at >= ? AND done_at < ? "
            "ORDER BY done_at, id LIMIT ?"
        )
        return [r for r in map(_refund, self.db.execute(sql, (channel, start, end, limit))) if r]

    # notifications
    def add_notification(self, **values: Any) -> int:
        return self._insert("notifications", values)

    def update_notification(self, notification_id: int, **values: Any) -> None:
        self._update("notifications", notification_id, values)

    def due_notifications(self, now: float, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT * FROM notifications WHERE status = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?"
        return [dict(r) for r in self.db.execute(sql, (now, limit))]

    def release_held(self, order_id: int, at: float) -> None:
        """Send held (out_of_order) notifications of the order at `at`, after the later one that released them."""
        sql = (
            "UPDATE notifications SET next_at = ?, flags = replace(flags, '\"held\"', '\"released\"') "
            "WHERE order_id = ? AND status = 'pending' AND flags LIKE '%\"held\"%'"
        )
        self.db.execute(sql, (at, order_id))

    def add_attempt(self, notification_id: int, at: float, http_status: int | None, error: str | None) -> None:
        self._insert(
            "attempts", {"notification_id": notification_id, "at": at, "http_status": http_status, "error": error}
        )

    def notifications(self, channel: str | None, order_id: int | None, limit: int) -> list[dict[str, Any]]:
        clauses: list[str] = []
        args: list[object] = []
        if channel:
            clauses.append("channel = ?")
            args.append(channel)
        if order_id is not None:
            clauses.append("order_id = ?")
            args.append(order_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(f"SELECT * FROM notifications {where} ORDER BY id DESC LIMIT ?", (*args, limit))  # noqa: S608
        result = []
        for row in rows:
            item = dict(row)
            attempts = self.db.execute(
                "SELECT at, http_status, error FROM attempts WHERE notification_id = ? ORDER BY id LIMIT 20",
                (item["id"],),
            )
            item["attempt_log"] = [dict(a) for a in attempts]
            item["headers"] = json.loads(item["headers"])
            item["flags"] = json.loads(item["flags"])
            result.append(item)
        return result

    def notification_counts(self, order_id: int) -> dict[str, int]:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(attempts > 0), 0), COALESCE(SUM(status = 'delivered'), 0), "
            "COALESCE(SUM(status = 'failed'), 0), COALESCE(SUM(attempts), 0) FROM notifications WHERE order_id = ?"
        )
        total, sent, acked, failed, attempts = self.db.execute(sql, (order_id,)).fetchone()
        return {"total": total, "sent": sent, "acknowledged": acked, "given_up": failed, "attempts": attempts}

    # misbehaviour
    def misbehaviour(self, channel: str) -> dict[str, Any]:
        row = self.db.execute("SELECT settings FROM misbehaviour WHERE channel = ?", (channel,)).fetchone()
        return json.loads(row[0]) if row else {}

    def set_misbehaviour(self, channel: str, settings: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO misbehaviour (channel, settings) VALUES (?, ?) "
            "ON CONFLICT(channel) DO UPDATE SET settings = excluded.settings",
            (channel, json.dumps(settings)),
        )

    def clear_misbehaviour(self) -> None:
        self.db.execute("DELETE FROM misbehaviour")

    # card tokens and idempotency keys
    def add_token(self, **values: Any) -> None:
        self._insert("tokens", values)

    def token(self, token_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return dict(row) if row else None

    def use_token(self, token_id: str) -> bool:
        cursor = self.db.execute("UPDATE tokens SET used = 1 WHERE id = ? AND used = 0", (token_id,))
        return cursor.rowcount == 1

    def idempotency(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def begin_idempotent(self, key: str, fingerprint: str, now: float, keep_seconds: float) -> None:
        self.db.execute("DELETE FROM idempotency WHERE created_at < ?", (now - keep_seconds,))
        self.db.execute(
            "DELETE FROM idempotency WHERE key IN "
            "(SELECT key FROM idempotency ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
            (MAX_IDEMPOTENCY_KEYS,),
        )
        self.db.execute(
            "INSERT INTO idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, 0, NULL, ?)",
            (key, fingerprint, now),
        )

    def finish_idempotent(self, key: str, status: int, body: str | None) -> None:
        if body is None:
            self.db.execute("DELETE FROM idempotency WHERE key = ?", (key,))
        else:
            self.db.execute("UPDATE idempotency SET status = ?, body = ? WHERE key = ?", (status, body, key))

    def has_held(self, order_id: int) -> bool:
        sql = "SELECT 1 FROM notifications WHERE order_id = ? AND status = 'pending' AND flags LIKE '%\"held\"%'"
        return self.db.execute(sql, (order_id,)).fetchone() is not None
