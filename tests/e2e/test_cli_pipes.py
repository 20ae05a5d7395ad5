"""A `paygate` command whose reader stops reading (`paygate call ... | head`) ends quietly, like shell tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_reader_gone_before_the_output_ends_the_command_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PAYGATE_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "stack", "certs", "dev", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is written
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # 128 + SIGPIPE, what a shell tool killed by SIGPIPE reports
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
    assert (tmp_path / "tls" / "ca.pem").exists()  # the work itself was done; only the telling was cut short
