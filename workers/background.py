"""What every worker runs beside its calls (docs/architecture.md, "The workers"): the expiry sweeper, the
janitor, the webhook relay and the risk rules file's reload, each a round at a time on the worker's thread pool,
and the feed that wakes event streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from runtime.settings import Settings
from workers.boundary import unavailable_store
from workers.events.feed import EventFeed
from workers.operations.janitor import Backoff
from workers.risk.engine import RELOAD_CHECK_INTERVAL_S
from workers.service import PaymentService
from workers.webhooks.relay import Relay

log = logging.getLogger(__name__)


async def every(
    interval_s: float, name: str, job: Callable[[], int], executor: ThreadPoolExecutor, stopping: asyncio.Event
) -> None:
    """Run `job` on the thread pool every `interval_s` until stopping. Every worker runs the background jobs
    (expiry, the janitor); a Redis lease inside each lets one worker at a time do a round, and their guarded
    updates make a double round harmless anyway."""
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), timeout=interval_s)
            return
        except TimeoutError:
            pass
        try:
            done = await loop.run_in_executor(executor, job)
        except Exception as error:  # a failed round (database or Redis down) must not end the loop
            outage = unavailable_store(error)
            if outage is None:
                log.exception("background round failed", extra={"fields": {"job": name}})
            else:  # one line a round while a store is down, not a traceback each time
                fields = {"job": name, "store": outage[0], "cause": outage[1]}
                log.warning("background round skipped: a data store is unavailable", extra={"fields": fields})
            continue
        if done:
            log.info("background round", extra={"fields": {"job": name, "settled": done}})


def background_jobs(
    settings: Settings,
    service: PaymentService,
    executor: ThreadPoolExecutor,
    feed: EventFeed,
    relay: Relay,
    stopping: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """What every worker runs beside its calls until stopping: the expiry sweeper, the janitor and the webhook
    relay (each a round at a time under its own Redis lease), and the feed that wakes event streams."""
    backoff = Backoff(settings.janitor_first_check_s, settings.janitor_max_check_s)
    return [
        asyncio.create_task(
            every(
                settings.sweep_interval_s,
                "expiry",
                lambda: service.sweep_once(settings.payment_ttl_s),
                executor,
                stopping,
            )
        ),
        asyncio.create_task(
            every(settings.janitor_interval_s, "janitor", lambda: service.check_attempts(backoff), executor, stopping)
        ),
        asyncio.create_task(feed.listen(stopping)),
        asyncio.create_task(every(settings.webhook_interval_s, "webhooks", relay.round, executor, stopping)),
        *_risk_rules_job(service, executor, stopping),
    ]


def _risk_rules_job(
    service: PaymentService, executor: ThreadPoolExecutor, stopping: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Follow the risk rules file off the payment path (docs/risk.md, "Reloading the rules")."""
    engine = service.context.risk
    if engine is None:
        return []
    return [
        asyncio.create_task(every(RELOAD_CHECK_INTERVAL_S, "risk_rules", engine.check_for_changes, executor, stopping))
    ]
