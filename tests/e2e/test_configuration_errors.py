"""Every invalid setting is a configuration error — one line naming the variable, exit status 2, no traceback — in
every `paygate` command that reads it (docs/configuration.md, "Errors"). Real processes, one per case.

The table has one row per kind of value (whole numbers, numbers, booleans, choices, addresses, URLs, paths, files
that are missing or malformed, TLS material, master keys, risk rules, limits) and per command; tests/unit/
test_settings.py tries every number field in-process. A row that passed would mean a process that starts on a
setting it cannot honour, or that dies with a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, free_port


def _address() -> str:
    return f"127.0.0.1:{free_port()}"


# The commands, each as it is started in a deployment (addresses free; workers that are not there are fine: a
# configuration error must stop the process before it looks for them).
COMMANDS: dict[str, Callable[[], list[str]]] = {
    "serve": lambda: ["serve", "--workers", "1", "--listen", _address(), "--metrics-listen", _address()],
    "gateway": lambda: ["gateway", "--worker-addresses", "127.0.0.1:9", "--listen", _address()],
    "worker": lambda: ["worker", "--worker-id", "w1", "--listen", _address()],
    "notify-edge": lambda: ["notify-edge", "--worker-addresses", "127.0.0.1:9", "--listen", _address()],
    "channel-sim": lambda: ["channel-sim", "--listen", _address()],
    "call": lambda: ["call", "GetBalance", '{"user_id": "u", "currency": "CNY"}', "--target", "127.0.0.1:9"],
    "keys": lambda: ["keys", "list"],
    "ledger": lambda: ["ledger", "verify"],
    "db": lambda: ["db", "upgrade"],
    "webhooks": lambda: ["webhooks", "list", "--owner", "o"],
    "audit": lambda: ["audit", "verify"],
    "reconcile": lambda: ["reconcile", "--channel", "alipay", "--date", "2026-11-01"],
}
SERVING = ("serve", "gateway", "worker", "notify-edge")


@dataclass(frozen=True)
class Case:
    command: str
    env: dict[str, str]
    names: str  # what stderr must name (the variable, or the flag)
    files: dict[str, str] = field(default_factory=dict)  # files to write in the data dir first: name -> content
    argv: tuple[str, ...] = ()  # replaces the command's own arguments

    @property
    def id(self) -> str:
        shown = ",".join(f"{k.removeprefix('PAYGATE_')}={v[:12]}" for k, v in self.env.items()) or " ".join(self.argv)
        return f"{self.command}:{shown}"


BAD_VALUES = [
    # choices, booleans, numbers out of range, limits
    ({"PAYGATE_MODE": "staging"}, "PAYGATE_MODE"),
    ({"PAYGATE_LOG_LEVEL": "bogus"}, "PAYGATE_LOG_LEVEL"),
    ({"PAYGATE_ACCESS_LOG": "maybe"}, "PAYGATE_ACCESS_LOG"),
    ({"PAYGATE_SANDBOX_CONFIRMATION": "later"}, "PAYGATE_SANDBOX_CONFIRMATION"),
    ({"PAYGATE_WORKERS": "0"}, "PAYGATE_WORKERS"),
    ({"PAYGATE_LOCK_LEASE_MS": "1.5"}, "PAYGATE_LOCK_LEASE_MS"),  # every number field: tests/unit/test_settings.py
    ({"PAYGATE_SWEEP_INTERVAL_S": "inf"}, "PAYGATE_SWEEP_INTERVAL_S"),
    ({"PAYGATE_PLATFORM_FEE_BPS": "10001"}, "PAYGATE_PLATFORM_FEE_BPS"),
    ({"PAYGATE_MAX_MESSAGE_BYTES": "10"}, "PAYGATE_MAX_MESSAGE_BYTES"),
    ({"PAYGATE_DEFAULT_KEY_RATE_PER_S": "-1"}, "PAYGATE_DEFAULT_KEY_RATE_PER_S"),
    ({"PAYGATE_NONCE_TTL_S": "100"}, "PAYGATE_NONCE_TTL_S"),
    ({"PAYGATE_HEALTH_INTERVAL_S": "0"}, "PAYGATE_HEALTH_INTERVAL_S"),
    ({"PAYGATE_WEBHOOK_RETRY_SCHEDULE_S": "1,x"}, "PAYGATE_WEBHOOK_RETRY_SCHEDULE_S"),
    # addresses and URLs
    ({"PAYGATE_LISTEN": "localhost"}, "PAYGATE_LISTEN"),
    ({"PAYGATE_METRICS_LISTEN": "127.0.0.1:99999"}, "PAYGATE_METRICS_LISTEN"),
    ({"PAYGATE_NOTIFY_LISTEN": "nowhere"}, "PAYGATE_NOTIFY_LISTEN"),
    ({"PAYGATE_CHANNEL_SIM_LISTEN": "nowhere"}, "PAYGATE_CHANNEL_SIM_LISTEN"),
    ({"PAYGATE_NOTIFY_BASE_URL": "callbacks.example.com"}, "PAYGATE_NOTIFY_BASE_URL"),
    ({"PAYGATE_DATABASE_URL": "not a url"}, "PAYGATE_DATABASE_URL"),
    ({"PAYGATE_DATABASE_URL": "oracle://u:hunter2@db/x"}, "PAYGATE_DATABASE_URL"),
    ({"PAYGATE_REDIS_URL": "localhost:6379"}, "PAYGATE_REDIS_URL"),
]


def _cases() -> list[object]:
    """Every command with a bad choice, every kind of value (one command each), files and arguments in
    `make test`; the same values across more commands in `make stress` (each case is a Python start-up, and
    every number field is also tried without a process in tests/unit/test_settings.py)."""
    wider = [Case(command, *BAD_VALUES[1]) for command in COMMANDS if command != "keys"]
    wider += [Case(command, env, names) for command in SERVING for env, names in BAD_VALUES[-3:]]
    cases = [Case(command, *BAD_VALUES[0]) for command in COMMANDS]
    cases += [Case("keys", env, names) for env, names in BAD_VALUES[1:]]
    return [
        *(pytest.param(case, id=case.id) for case in cases + FILE_CASES + OTHER_CASES),
        *(pytest.param(case, id=case.id, marks=pytest.mark.stress) for case in wider),
    ]


MISSING = "/nonexistent/pg"
FILE_CASES = [
    # paths and files: missing, a directory, malformed
    Case("keys", {"PAYGATE_DATA_DIR": "{data}/a-file"}, "PAYGATE_DATA_DIR", {"a-file": "not a directory"}),
    Case("gateway", {"PAYGATE_MASTER_KEY": "too-short"}, "PAYGATE_MASTER_KEY"),
    Case("keys", {"PAYGATE_MASTER_KEY_FILE": MISSING}, "PAYGATE_MASTER_KEY_FILE", argv=("keys", "create", "--name=k")),
    Case("gateway", {"PAYGATE_MASTER_KEY_FILE": "{data}"}, "PAYGATE_MASTER_KEY_FILE"),
    Case("worker", {"PAYGATE_MASTER_KEY_PREVIOUS": "not-a-key"}, "PAYGATE_MASTER_KEY_PREVIOUS"),
    Case("gateway", {"PAYGATE_MASTER_KEY_PREVIOUS_FILE": MISSING}, "PAYGATE_MASTER_KEY_PREVIOUS_FILE"),
    Case("worker", {"PAYGATE_CHANNELS_CONFIG": MISSING}, "PAYGATE_CHANNELS_CONFIG"),
    Case("worker", {"PAYGATE_CHANNELS_CONFIG": "{data}/c.json"}, "PAYGATE_CHANNELS_CONFIG", {"c.json": "{not json"}),
    Case("worker", {"PAYGATE_RISK_RULES": MISSING}, "PAYGATE_RISK_RULES"),
    Case("serve", {"PAYGATE_RISK_RULES": "{data}/r.toml"}, "PAYGATE_RISK_RULES", {"r.toml": "[[rule]\nbroken"}),
    Case("gateway", {"PAYGATE_TLS_CERT": MISSING, "PAYGATE_TLS_KEY": MISSING}, "PAYGATE_TLS_CERT"),
    Case("gateway", {"PAYGATE_TLS_CERT": "{data}/c.pem", "PAYGATE_TLS_KEY": "{data}/c.pem"}, "PAYGATE_TLS_CERT",
         {"c.pem": "not PEM"}),
    Case("gateway", {"PAYGATE_TLS_CLIENT_CA": MISSING}, "PAYGATE_TLS_CLIENT_CA"),
    Case("worker", {"PAYGATE_INTERNAL_TLS_CA": MISSING, "PAYGATE_INTERNAL_TLS_CERT": MISSING,
                    "PAYGATE_INTERNAL_TLS_KEY": MISSING}, "PAYGATE_INTERNAL_TLS_CA"),
]  # fmt: skip
OTHER_CASES = [
    # variables read outside the settings object, and command-line values
    Case("channel-sim", {"PAYGATE_SIM_PAY_AFTER_MS": "soon"}, "PAYGATE_SIM_PAY_AFTER_MS"),
    Case("channel-sim", {"PAYGATE_SIM_LISTEN": "nowhere"}, "PAYGATE_SIM_LISTEN", argv=("channel-sim",)),
    Case("call", {"PAYGATE_KEY_ID": "bad id!", "PAYGATE_KEY_SECRET": "sk_x"}, "PAYGATE_KEY_ID"),
    Case("serve", {}, "--workers", argv=("serve", "--workers", "many")),
    Case("serve", {}, "--listen", argv=("serve", "--listen", "nowhere")),
    Case("gateway", {}, "--worker-addresses", argv=("gateway", "--worker-addresses", ",")),
    Case("worker", {}, "--listen", argv=("worker", "--listen", "nowhere")),
    Case("keys", {}, "--rate", argv=("keys", "create", "--name", "x", "--rate", "fast")),
    Case("keys", {}, "--grace-hours", argv=("keys", "rotate", "k", "--grace-hours", "nan")),
    Case("reconcile", {}, "--date", argv=("reconcile", "--channel", "alipay", "--date", "yesterday")),
    Case("ledger", {}, "--postings", argv=("ledger", "seed", "--postings", "-5")),
    Case("bench", {}, "--duration-s", argv=("bench", "--duration-s", "inf")),
]
CASES = _cases()


def _run(case: Case, directory: Path) -> subprocess.CompletedProcess[str]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in case.files.items():
        (directory / name).write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env.update({"PAYGATE_NOTIFY_LISTEN": "off", "PAYGATE_CHANNEL_SIM_LISTEN": "off"})
    env.update({k: v.replace("{data}", str(directory)) for k, v in case.env.items()})
    argv = list(case.argv) if case.argv else COMMANDS[case.command]()
    if "PAYGATE_DATA_DIR" not in case.env:
        argv += ["--data-dir", str(directory / "data")]
    command = [sys.executable, "-m", "stack", *argv]
    try:
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired as running:  # it took the value and kept running: the case fails, visibly
        return subprocess.CompletedProcess(command, -1, str(running.stdout or ""), str(running.stderr or ""))


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """The selected cases' processes, a few at a time (each is a Python start-up that ends at once when the test
    passes)."""
    selected = [
        item.callspec.params["case"]  # type: ignore[attr-defined]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    root = tmp_path_factory.mktemp("config-errors")
    with ThreadPoolExecutor(4) as pool:
        done = pool.map(lambda pair: _run(pair[1], root / str(pair[0])), enumerate(selected))
        return {case.id: result for case, result in zip(selected, done, strict=True)}


@pytest.mark.parametrize("case", CASES)
def test_an_invalid_setting_is_one_clear_line_and_exit_2(
    case: Case, outcomes: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = outcomes[case.id]
    shown = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert case.names in result.stderr, shown
    assert "hunter2" not in result.stderr  # a URL's password is never echoed
