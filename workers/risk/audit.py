"""Rule reloads in the audit trail (docs/audit.md, docs/risk.md "Reloading the rules").

Every worker that applies a changed rules file, or refuses one, appends an entry naming itself (host and process),
the file and its SHA-256, so "which rules were in force where, since when" has an answer. Review decisions are
recorded by workers/operations/risk_review.py in their own transactions.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from runtime import audit
from runtime.db import Database

ReloadRecorder = Callable[[str, dict[str, str]], None]


def reload_recorder(database: Database) -> ReloadRecorder:
    """A recorder of this worker's reloads; raising (the database is down) makes the engine keep its rules and
    try the file again a second later: a rule change is applied only once it is on record."""
    process = f"{socket.gethostname()[:200]}/{os.getpid()}"

    def record(outcome: str, details: dict[str, str]) -> None:
        shown: dict[str, str | int | bool | None] = {"worker": process, **details}
        with database.write() as connection:
            audit.record(
                connection, actor=audit.SYSTEM, action=f"risk.rules_{outcome}", subject="risk-rules", details=shown
            )

    return record
