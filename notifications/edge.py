"""`paygate notify-edge`: where providers deliver their callbacks (docs/channels.md, "Notifications").

`POST /notify/alipay`, `/notify/wechatpay`, `/notify/unionpay`, `/notify/card` — the URL each adapter sends as
`notify_url` / `backUrl`. For each callback the edge, and nothing more:

1. stores the request as received (headers and body, byte for byte) and commits — before anything else, so no
   callback is lost and every one can be reviewed or replayed;
2. hands its id to a worker (round-robin over the workers' internal service), which verifies and applies it;
3. answers the provider with the worker's answer, in the provider's own format.

The edge holds no business logic and no provider keys. When no worker can take the callback it answers 503: every
provider treats that as "deliver again later", and the stored copy stays for review.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from collections.abc import Sequence

import grpc
from aiohttp import web

from runtime import process_metrics
from runtime.db import Database
from runtime.grpc_server import WORKER_CHANNEL_OPTIONS
from runtime.metrics import multiprocess_enabled
from runtime.settings import Settings, parse_host_port
from runtime.tls import worker_channel, worker_channel_credentials
from workers import internal
from workers.channels.base import HttpReply
from workers.operations.context import utc_now
from workers.store import notifications

log = logging.getLogger(__name__)

# The path names providers are told, and the channel each stands for.
CHANNELS = {"alipay": "alipay", "wechatpay": "wechat_pay", "unionpay": "unionpay", "card": "card"}
WORKER_TIMEOUT_S = 15.0


class Edge:
    def __init__(self, settings: Settings, database: Database, worker_addresses: Sequence[str]) -> None:
        self._settings = settings
        self._database = database
        # Mutual TLS to the workers' internal service with the edge's own certificate (docs/security.md).
        credentials = worker_channel_credentials(settings, "notification edge")
        self._channels = [worker_channel(address, credentials, WORKER_CHANNEL_OPTIONS) for address in worker_addresses]
        self._next = itertools.cycle(range(len(self._channels)))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=notifications.MAX_BODY_BYTES)
        app.router.add_post("/notify/{channel}", self.receive)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def receive(self, request: web.Request) -> web.Response:
        channel = CHANNELS.get(request.match_info["channel"])
        if channel is None:
            raise web.HTTPNotFound(text="no such notification endpoint")
        body = await request.read()  # larger than MAX_BODY_BYTES: aiohttp answers 413 itself
        headers = {name.lower(): value for name, value in request.headers.items()}
        notification_id = await asyncio.to_thread(self._store, channel, headers, body)
        reply = await self._hand_over(channel, notification_id)
        if reply is None:
            return web.Response(status=503, text="not processed yet; deliver again later")
        content_type = reply.headers.get("content-type")
        response = web.Response(status=reply.status, body=reply.body)
        if content_type:
            response.headers["Content-Type"] = content_type
        return response

    def _store(self, channel: str, headers: dict[str, str], body: bytes) -> int:
        with self._database.write() as connection:
            return notifications.insert_received(connection, channel, headers, body, utc_now())

    async def _hand_over(self, channel: str, notification_id: int) -> HttpReply | None:
        """To the next worker that answers; None when none does (the provider will deliver again)."""
        request = internal.encode_request(channel, notification_id)
        for _ in range(len(self._channels)):
            worker = self._channels[next(self._next)]
            try:
                raw = await worker.unary_unary(internal.APPLY_PATH)(request, timeout=WORKER_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "worker could not take a notification",
                    extra={"fields": {"notification_id": notification_id, "code": error.code().name}},
                )
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    continue
                return None
            return internal.decode_reply(raw)
        return None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def run_edge(settings: Settings, listen: str, worker_addresses: Sequence[str]) -> None:
    host, port = parse_host_port(listen, "notify listen address")
    if multiprocess_enabled():  # under `paygate serve` its figures join the stack's /metrics; alone it has none
        process_metrics.start("notify-edge", None)
    database = Database(settings.effective_database_url(), pool_size=4)
    edge = Edge(settings, database, worker_addresses)
    runner = web.AppRunner(edge.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("notification edge serving", extra={"fields": {"listen": listen}})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await runner.cleanup()
    await edge.close()
    database.dispose()
    log.info("notification edge stopped")
