"""Crash points: a test that must prove recovery from a crash at one exact line kills the process there.

Inert unless PAYGATE_FAILPOINT names the point (never set in production: `paygate serve` in production mode
refuses it). A point fires once per data directory — it leaves a marker in the run directory — so the restarted
process carries on normally and the test can watch it recover (docs/correctness.md).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "PAYGATE_FAILPOINT"


def crash_here(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    marker = Path(os.environ.get("PAYGATE_DATA_DIR", ".paygate")) / "run" / f"failpoint-{name}"
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # fired already: this is the restarted process
    os.close(descriptor)
    os.kill(os.getpid(), signal.SIGKILL)
