"""Delivery of asynchronous notifications, with a bounded retry schedule and every attempt recorded.

The real providers retry over hours (Alipay: 4m, 10m, 10m, 1h, 2h, 6h, 15h; WeChat Pay: 15s, 15s, 30s, 3m, 10m,
20m, 30m, ... up to 24h; UnionPay and card processors similar). The simulator keeps the shape but compresses the
clock so that tests finish: at most MAX_ATTEMPTS attempts, RETRY_DELAYS apart.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx

from channelsim.common import now

if TYPE_CHECKING:
    from channelsim.engine import Sim

log = logging.getLogger("channelsim.notify")

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
MAX_IN_FLIGHT = 32


async def deliver(sim: Sim, row: dict[str, Any]) -> None:
    """One delivery attempt of one notification; schedules the next attempt or gives up."""
    try:
        await _attempt(sim, row)
    except Exception:
        log.exception("notification %s: delivery attempt failed unexpectedly", row["id"])
        sim.store.update_notification(row["id"], next_at=now() + RETRY_DELAYS[-1])


async def _attempt(sim: Sim, row: dict[str, Any]) -> None:
    provider = sim.providers[row["channel"]]
    flags = json.loads(row["flags"])
    headers = {**json.loads(row["headers"]), **provider.send_headers(row["body"], flags)}
    headers["Content-Type"] = row["content_type"]
    headers.setdefault("User-Agent", f"channel-sim/{row['channel']}")
    status: int | None = None
    text = ""
    error: str | None = None
    assert sim.client is not None
    try:
        response = await sim.client.post(row["url"], content=row["body"].encode(), headers=headers)
        status, text = response.status_code, response.text[:500]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    attempts = int(row["attempts"]) + 1
    at = now()
    sim.store.add_attempt(row["id"], at, status, error)
    if status is not None and provider.acknowledged(status, text):
        sim.store.update_notification(
            row["id"], status="delivered", attempts=attempts, delivered_at=at, last_error=None
        )
        log.info("%s %s notification %s delivered (attempt %d)", row["channel"], row["event"], row["id"], attempts)
        return
    reason = error or f"HTTP {status}: {text[:100]!r}"
    if attempts >= MAX_ATTEMPTS:
        sim.store.update_notification(row["id"], status="failed", attempts=attempts, last_error=reason)
        log.warning("%s notification %s given up after %d attempts: %s", row["channel"], row["id"], attempts, reason)
        return
    sim.store.update_notification(
        row["id"], attempts=attempts, next_at=at + RETRY_DELAYS[attempts - 1], last_error=reason
    )
