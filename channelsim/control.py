"""The control surface (`/control/...`, JSON) and `/healthz`: drive orders, set misbehaviour, read state and bills.

See channelsim/README.md for the list of endpoints.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channelsim import CHANNELS
from channelsim.common import local, now, parse_day
from channelsim.keys import merchant_config
from channelsim.store import Order

if TYPE_CHECKING:
    from channelsim.engine import Sim

MAX_LIST = 500


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, indent=1))


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _limit(request: web.Request, default: int = 100) -> int:
    text = request.query.get("limit", str(default))
    return max(1, min(MAX_LIST, int(text))) if text.isdigit() else default


def order_summary(sim: Sim, order: Order) -> dict[str, Any]:
    refunds = sim.store.refunds_of(order.id)
    return {
        "channel": order.channel,
        "out_trade_no": order.out_trade_no,
        "trade_no": order.trade_no,
        "status": order.status,
        "provider_status": sim.providers[order.channel].status_of(order),
        "amount": order.amount,
        "currency": order.currency,
        "paid_amount": order.paid_amount,
        "refunded_amount": sum(r.amount for r in refunds if r.status == "succeeded"),
        "refunds": [
            {"out_refund_no": r.out_refund_no, "refund_no": r.refund_no, "amount": r.amount, "status": r.status}
            for r in refunds
        ],
        "fail_code": order.fail_code,
        "abandoned": bool(order.extra.get("abandoned")),
        "auto_pay_at": order.pay_at,
        "created_at": order.created_at,
        "paid_at": order.paid_at,
        "notify_url": order.notify_url,
        "notifications": sim.store.notification_counts(order.id),
    }


class Control:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/control/orders", self.orders)
        app.router.add_get("/control/orders/{channel}/{out_trade_no}", self.order)
        app.router.add_post("/control/orders/{channel}/{out_trade_no}/{action}", self.act)
        app.router.add_get("/control/notifications", self.notifications)
        app.router.add_get("/control/misbehave", self.misbehaviour)
        app.router.add_get("/control/misbehave/{channel}", self.misbehaviour)
        app.router.add_post("/control/misbehave/{channel}", self.misbehave)
        app.router.add_post("/control/reset", self.reset)
        app.router.add_get("/control/statement", self.statement)
        app.router.add_get("/control/merchant", self.merchant)

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok", "pay_after_ms": self.sim.pay_after_ms})

    def _channel(self, request: web.Request, required: bool = True) -> str | None:
        channel = request.match_info.get("channel") or request.query.get("channel") or None
        if channel is None and not required:
            return None
        if channel not in CHANNELS:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"channel must be one of {', '.join(CHANNELS)}"}),
                content_type="application/json",
            )
        return channel

    async def orders(self, request: web.Request) -> web.Response:
        channel = self._channel(request, required=False)
        orders = self.sim.store.orders(channel, _limit(request))
        return _json({"orders": [order_summary(self.sim, o) for o in orders]})

    def _order(self, request: web.Request) -> Order:
        channel = self._channel(request)
        assert channel is not None
        order = self.sim.store.order_by_out(channel, request.match_info["out_trade_no"])
        if order is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such order"}), content_type="application/json")
        return order

    async def order(self, request: web.Request) -> web.Response:
        return _json(order_summary(self.sim, self._order(request)))

    async def act(self, request: web.Request) -> web.Response:
        order = self._order(request)
        action = request.match_info["action"]
        body: dict[str, Any] = {}
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return _problem(400, "the body must be JSON")
            if not isinstance(body, dict):
                return _problem(400, "the body must be a JSON object")
        if action not in ("pay", "fail", "abandon"):
            return _problem(404, "actions are pay, fail, abandon")
        if order.status != "pending":
            return _problem(409, f"the order is {order.status}, not pending")
        if action == "abandon":
            order = self.sim.abandon(order)
        else:
            code = body.get("code")
            order = self.sim.settle(order, action, str(code) if code else None)
        return _json(order_summary(self.sim, order))

    async def notifications(self, request: web.Request) -> web.Response:
        channel = self._channel(request, required=False)
        order_id = None
        if request.query.get("out_trade_no"):
            if channel is None:
                return _problem(400, "out_trade_no needs channel")
            order = self.sim.store.order_by_out(channel, request.query["out_trade_no"])
            if order is None:
                return _json({"notifications": []})
            order_id = order.id
        items = self.sim.store.notifications(channel, order_id, _limit(request))
        return _json({"notifications": items})

    async def misbehaviour(self, request: web.Request) -> web.Response:
        if "channel" in request.match_info:
            channel = self._channel(request)
            assert channel is not None
            return _json(self.sim.misbehave.get(channel))
        return _json(self.sim.misbehave.all())

    async def misbehave(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        assert channel is not None
        try:
            patch = await request.json() if request.can_read_body else {}
        except ValueError:
            return _problem(400, "the body must be JSON")
        if not isinstance(patch, dict):
            return _problem(400, "the body must be a JSON object")
        try:
            return _json(self.sim.misbehave.update(channel, patch))
        except ValueError as exc:
            return _problem(400, str(exc))

    async def reset(self, _request: web.Request) -> web.Response:
        self.sim.misbehave.reset()
        return _json(self.sim.misbehave.all())

    async def statement(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        assert channel is not None
        tz = self.sim.providers[channel].statement_tz
        day = parse_day(request.query.get("date", "")) if request.query.get("date") else local(now(), tz).date()
        if day is None:
            return _problem(400, "date is YYYY-MM-DD")
        content_type, text = self.sim.statement(channel, day)
        return web.Response(text=text, content_type=content_type, charset="utf-8")

    async def merchant(self, request: web.Request) -> web.Response:
        return _json(merchant_config(self.sim.keys, f"{request.scheme}://{request.host}"))
