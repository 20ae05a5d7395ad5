"""The master key through real `paygate` processes: refused when missing outside dev mode, and the rotation
runbook of docs/security.md ("Secrets at rest and the master key") end to end on the CLI."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

OLD_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
NEW_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


def paygate(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "stack", *args, "--data-dir", str(data_dir)],
        env={**clean, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


PROCESSES = [
    ["serve", "--workers", "1"],
    ["gateway", "--worker-addresses", "127.0.0.1:1"],
    ["worker", "--worker-id", "w1", "--listen", "127.0.0.1:1"],
    ["keys", "list"],
]


@pytest.mark.parametrize("command", PROCESSES)
def test_outside_dev_mode_nothing_starts_without_a_master_key(tmp_path: Path, command: list[str]) -> None:
    production = {
        "PAYGATE_MODE": "production",
        "PAYGATE_DATABASE_URL": "postgresql://paygate:db-password@127.0.0.1:1/paygate",
        "PAYGATE_REDIS_URL": "redis://:redis-password@127.0.0.1:1/0",
    }
    result = paygate(tmp_path, *command, **production)
    assert result.returncode == 2, result.stderr
    assert "PAYGATE_MASTER_KEY" in result.stderr
    assert "password" not in result.stdout + result.stderr
    assert not (tmp_path / "master.key").exists()  # no dev key is made outside dev mode


def test_a_malformed_master_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    result = paygate(tmp_path, "keys", "list", PAYGATE_MASTER_KEY="not-a-key-but-secret-text")
    assert result.returncode == 2
    assert "must be 32 url-safe base64-encoded bytes" in result.stderr
    assert "secret-text" not in result.stdout + result.stderr


def test_the_rotation_runbook(tmp_path: Path) -> None:
    created = paygate(tmp_path, "keys", "create", "--name", "svc", PAYGATE_MASTER_KEY=OLD_KEY)
    assert created.returncode == 0, created.stderr
    # 1. the new key current, the old one previous: the rewrap finds one secret to move.
    rotated = {"PAYGATE_MASTER_KEY": NEW_KEY, "PAYGATE_MASTER_KEY_PREVIOUS": OLD_KEY}
    dry = paygate(tmp_path, "keys", "rewrap", "--dry-run", **rotated)
    assert dry.returncode == 0, dry.stderr
    assert "api_keys.secret_ciphertext: 1 to rewrap, 0 already current" in dry.stdout
    # 2. without the old key nothing opens it yet: the rewrap says so and fails.
    early = paygate(tmp_path, "keys", "rewrap", "--dry-run", PAYGATE_MASTER_KEY=NEW_KEY)
    assert early.returncode == 1 and "is a previous key missing" in early.stderr
    # 3. the rewrap, twice: the second finds everything current.
    done = paygate(tmp_path, "keys", "rewrap", **rotated)
    assert done.returncode == 0 and "api_keys.secret_ciphertext: 1 rewrapped" in done.stdout
    again = paygate(tmp_path, "keys", "rewrap", **rotated)
    assert "api_keys.secret_ciphertext: 0 rewrapped, 1 already current" in again.stdout
    # 4. the old key dropped: everything opens with the new one alone.
    alone = paygate(tmp_path, "keys", "rewrap", "--dry-run", PAYGATE_MASTER_KEY=NEW_KEY)
    assert alone.returncode == 0 and "1 already current" in alone.stdout
    assert OLD_KEY not in done.stdout + done.stderr and NEW_KEY not in done.stdout + done.stderr
