"""What the gateway notes about each verified call's key (docs/security.md, "Key lifecycle"): which of its secrets
signed it (a counter, so an operator sees when callers have moved to a rotated secret) and when it was last used
(kept in memory and written to the database every `key_last_used_flush_s`, never once per call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from gateway.auth import AuthenticatedCaller
from gateway.keystore import KeyStore

log = logging.getLogger(__name__)


class KeyUsage:
    def __init__(self, keystore: KeyStore, secret_used: Any, flush_interval_s: float) -> None:
        self._keystore = keystore
        self._secret_used = secret_used  # Counter(key_id, secret)
        self._children: dict[tuple[str, str], Any] = {}  # label children, looked up once per key and secret
        self._flush_interval_s = flush_interval_s
        self._last_used: dict[str, float] = {}  # since the last flush; bounded by the keys in the database

    def note(self, caller: AuthenticatedCaller) -> None:
        """A verified call of `caller`'s key (called on the event loop: no locking needed)."""
        labels = (caller.key_id, caller.signed_with)
        child = self._children.get(labels)
        if child is None:
            # Key ids come only from verified calls, i.e. keys an operator created: a bounded label set.
            child = self._children[labels] = self._secret_used.labels(*labels)
        child.inc()
        self._last_used[caller.key_id] = time.time()

    async def run(self) -> None:
        """Flush every interval until cancelled, then once more (a stopping gateway keeps what it saw)."""
        try:
            while True:
                await asyncio.sleep(self._flush_interval_s)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        if not self._last_used:
            return
        pending, self._last_used = self._last_used, {}
        used_at = {key_id: datetime.fromtimestamp(at, UTC) for key_id, at in pending.items()}
        try:
            await asyncio.to_thread(self._keystore.record_last_used, used_at)
        except SQLAlchemyError as error:
            # Not worth failing calls for: keep the times and try again next round (newer times win).
            log.warning("could not record keys' last use: %s", type(error).__name__)
            for key_id, at in pending.items():
                self._last_used[key_id] = max(at, self._last_used.get(key_id, 0.0))
