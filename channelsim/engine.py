"""The simulator's engine: state, keys, the providers, and one background loop that pays due orders, completes
due refunds and delivers due notifications. Everything it schedules is in the state file, so a restart resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

import httpx

from channelsim.bills import statement_lines
from channelsim.common import now
from channelsim.keys import load_or_create
from channelsim.misbehave import Misbehaviour
from channelsim.notify import MAX_IN_FLIGHT, deliver
from channelsim.provider import Provider
from channelsim.store import Order, Refund, Store

log = logging.getLogger("channelsim")

TICK_SECONDS = 0.05
BATCH = 50
HOLD_SECONDS = 10.0  # out_of_order: the longest an earlier notification waits for a later one
REFUND_DELAY_SECONDS = 0.2
ALTERING_MODES = frozenset({"forged", "wrong_amount", "wrong_currency", "wrong_app_id"})


class Sim:
    def __init__(self, data_dir: Path, pay_after_ms: int = 300) -> None:
        self.data_dir = data_dir
        self.keys = load_or_create(data_dir)
        self.store = Store(self.keys.directory / "state.sqlite3")
        self.misbehave = Misbehaviour(self.store)
        self.pay_after_ms = max(0, pay_after_ms)
        self.providers: dict[str, Provider] = {}
        self.stopping = asyncio.Event()
        self.client: httpx.AsyncClient | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._busy_orders: set[int] = set()

    # scheduling
    def pay_at(self) -> float | None:
        """When a new order pays itself; None in manual mode (pay_after_ms=0)."""
        return now() + self.pay_after_ms / 1000 if self.pay_after_ms > 0 else None

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, min(seconds, 60.0)))

    # order lifecycle
    def settle(self, order: Order, outcome: str, code: str | None = None) -> Order:
        """Pay or fail a pending order (automatically when due, or from the control surface)."""
        if order.status != "pending":
            return order
        provider = self.providers[order.channel]
        if outcome == "pay":
            declined = self.misbehave.take_decline(order.channel, skip=provider.sync_decline_codes)
            if declined:
                outcome, code = "fail", declined
        if outcome == "pay":
            order = self.store.update_order(
                order, status="paid", paid_at=now(), pay_at=None, paid_amount=provider.paid_amount(order)
            )
            log.info("%s order %s paid", order.channel, order.out_trade_no)
            self.emit(order, "paid")
        else:
            order = self.store.update_order(
                order, status="failed", pay_at=None, closed_at=now(), fail_code=code or provider.default_fail_code
            )
            log.info("%s order %s failed (%s)", order.channel, order.out_trade_no, order.fail_code)
            self.emit(order, "failed")
        return order

    def abandon(self, order: Order) -> Order:
        """The buyer walks away: the order stays unpaid until the merchant closes it."""
        extra = {**order.extra, "abandoned": True}
        return self.store.update_order(order, pay_at=None, extra=extra)

    def start_refund(
        self,
        order: Order,
        out_refund_no: str,
        refund_no: str,
        amount: int,
        *,
        notify_url: str = "",
        status: str = "pending",
        extra: dict[str, object] | None = None,
    ) -> Refund:
        at = now()
        return self.store.create_refund(
            channel=order.channel,
            order_id=order.id,
            refund_no=refund_no,
            out_refund_no=out_refund_no,
            amount=amount,
            status=status,
            notify_url=notify_url,
            created_at=at,
            complete_at=at + REFUND_DELAY_SECONDS,
            done_at=at if status == "succeeded" else None,
            extra=extra or {},
        )

    def complete_refund(self, refund: Refund) -> None:
        if refund.status == "pending":
            refund = self.store.update_refund(refund, status="succeeded", done_at=now(), processed=1)
        else:
            refund = self.store.update_refund(refund, processed=1)
        order = self.store.order(refund.order_id)
        if order is not None and refund.status == "succeeded":
            log.info("%s refund %s of %s succeeded", refund.channel, refund.out_refund_no, order.out_trade_no)
            self.emit(order, "refund", refund)

    def statement(self, channel: str, day: date) -> tuple[str, str]:
        """(content type, text) of the channel's bill for the day, statement faults applied."""
        return self.providers[channel].render_statement(day, statement_lines(self, channel, day))

    # notifications
    def emit(self, order: Order, event: str, refund: Refund | None = None) -> None:
        provider = self.providers[order.channel]
        modes, delay_ms = self.misbehave.callback_modes(order.channel)
        flags = modes & ALTERING_MODES
        note = provider.note(event, order, refund, set(flags))
        if note is None or not note.url:
            return
        at = now()
        base = {
            "channel": order.channel,
            "order_id": order.id,
            "event": event,
            "url": note.url,
            "content_type": note.content_type,
            "body": note.body,
            "headers": note.headers,
            "created_at": at,
        }
        tags = sorted(flags)
        if "never" in modes:
            self.store.add_notification(**base, flags=[*tags, "never"], status="suppressed", next_at=None)
            return
        send_at = at + delay_ms / 1000 if "delay_ms" in modes else at
        held = self.store.has_held(order.id)
        if "out_of_order" in modes and not held:
            tags.append("held")
            send_at = at + HOLD_SECONDS
        self.store.add_notification(**base, flags=tags, status="pending", next_at=send_at)
        if "duplicate" in modes:
            self.store.add_notification(**base, flags=[*tags, "duplicate"], status="pending", next_at=send_at + 0.05)
        if held:
            self.store.release_held(order.id, send_at + 0.3)

    # the background loop
    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False, follow_redirects=False)
        self._loop_task = asyncio.create_task(self._run(), name="channelsim-engine")

    async def stop(self) -> None:
        self.stopping.set()
        tasks = [t for t in (self._loop_task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()
        self.store.close()

    async def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("engine tick failed")
            await self.sleep(TICK_SECONDS)

    def _forget(self, key: int, order_id: int) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(key, None)
            self._busy_orders.discard(order_id)

        return done

    def tick(self) -> None:
        at = now()
        for order in self.store.due_orders(at, BATCH):
            self.settle(order, "pay")
        for refund in self.store.due_refunds(at, BATCH):
            self.complete_refund(refund)
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        # One delivery at a time per order, oldest first: an order's notifications arrive in the order they were made
        # (unless a misbehaviour says otherwise, or an earlier one is waiting for its retry).
        for row in self.store.due_notifications(at, MAX_IN_FLIGHT * 2):
            if row["id"] in self._in_flight or row["order_id"] in self._busy_orders:
                continue
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                break
            task = asyncio.create_task(deliver(self, row))
            self._in_flight[row["id"]] = task
            self._busy_orders.add(row["order_id"])
            task.add_done_callback(self._forget(int(row["id"]), int(row["order_id"])))
