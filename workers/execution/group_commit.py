"""Group commit (docs/ledger.md, "Group commit"): one thread per worker process commits, in one database
transaction, the operations that arrive together.

Callers queue an item — from an event loop with `submit_async` (the worker's servicer), or from any thread with
`submit`, which blocks — and get its outcome back; the committer thread takes the first waiting item, then
whatever else is already queued (up to `max_batch`, gathering for at most `max_wait_ms` after the first), and
hands the batch to `commit(batch)`, which must settle every item's future — with its own result or its own error.
While one batch commits (its fsync included), the next one gathers: the busier the worker, the larger the
batches, and one durable commit is shared by all of them.

The queue has no bound of its own: every item in it is a call in flight on the worker's gRPC server, which admits
at most `maximum_concurrent_rpcs` (1,024) at a time (workers/server.py), so that is its bound.

Nothing here knows what an item is; `workers/operations/purchase_batch.py` says how a batch of wallet purchases
is committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")


class CommitterStopped(Exception):
    """The worker is shutting down: the item was not committed (callers take the one-at-a-time path)."""


@dataclass
class Pending(Generic[ItemT]):
    item: ItemT
    future: Future[object] = field(default_factory=Future)
    # Set when an event loop waits for the outcome (`submit_async`): the committer hands it over with one wake-up
    # of that loop per batch instead of one per operation.
    waiter: asyncio.Future[object] | None = None


class GroupCommitter(Generic[ItemT]):
    def __init__(
        self,
        name: str,
        commit: Callable[[list[Pending[ItemT]]], None],
        *,
        max_batch: int,
        max_wait_ms: float,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000
        self._queue: queue.SimpleQueue[Pending[ItemT] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"group-commit-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: ItemT) -> object:
        """Queue `item` and wait for its own outcome (its result, or its error raised here)."""
        return self.submit_nowait(item).result()

    def submit_nowait(self, item: ItemT) -> Future[object]:
        """Queue `item`; its future settles with its own outcome."""
        if self._stopped.is_set():
            raise CommitterStopped("the group committer has stopped")
        pending: Pending[ItemT] = Pending(item)
        self._queue.put(pending)
        return pending.future

    def submit_async(self, item: ItemT) -> asyncio.Future[object]:
        """From an event loop: queue `item` and get an asyncio future of its outcome; a call waits for its batch
        without a thread of the pool, and a whole batch is handed back to the loop in one `call_soon_threadsafe`."""
        if self._stopped.is_set():
            raise CommitterStopped("the group committer has stopped")
        waiter = asyncio.get_running_loop().create_future()
        self._queue.put(Pending(item, waiter=waiter))
        return waiter

    def close(self) -> None:
        """Commit what is queued, then stop; later submissions raise CommitterStopped."""
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _gather(self, first: Pending[ItemT]) -> tuple[list[Pending[ItemT]], bool]:
        """The batch that starts with `first`: what is queued already, and what arrives within the wait bound.
        Also whether the stop sentinel was met."""
        batch = [first]
        deadline = time.monotonic() + self._max_wait_s
        while len(batch) < self._max_batch:
            try:
                remaining = deadline - time.monotonic()
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, stopping = self._gather(first)
            try:
                self._commit(batch)
            except BaseException as error:  # a bug in commit(): every caller still gets an answer
                log.exception("group commit failed")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
            for pending in batch:
                if not pending.future.done():  # commit() must settle all; never leave a caller waiting
                    pending.future.set_exception(RuntimeError("group commit left an operation without an outcome"))
            _wake_loops(batch)
        self._drain()

    def _drain(self) -> None:
        """After the stop: anything still queued is refused (it was never committed), never left waiting."""
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending is not None:
                pending.future.set_exception(CommitterStopped("the group committer has stopped"))
                _wake_loops([pending])


def _wake_loops(batch: list[Pending[ItemT]]) -> None:
    """Hand the outcomes of the batch's `submit_async` callers to their loops: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Pending[ItemT]]] = {}
    for pending in batch:
        if pending.waiter is not None:
            by_loop.setdefault(pending.waiter.get_loop(), []).append(pending)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, waiting)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            log.warning("group commit outcomes for a closed event loop were dropped")


def _deliver(waiting: list[Pending[ItemT]]) -> None:
    """On the waiters' loop: copy each operation's outcome into its asyncio future (unless the call was cancelled)."""
    for pending in waiting:
        waiter = pending.waiter
        if waiter is None or waiter.done():
            continue
        error = pending.future.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(pending.future.result())
