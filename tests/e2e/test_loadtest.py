"""The Locust file keeps working: a short headless run against the real stack ends with no failed request."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO_ROOT, Stack


def test_locust_headless_run_has_no_failures(stack: Stack, credentials: tuple[str, str]) -> None:
    key_id, secret = credentials
    env = {**stack.env, "PAYGATE_KEY_ID": key_id, "PAYGATE_SECRET": secret}
    env["PAYGATE_LOADTEST_CA"] = str(stack.tls_dir / "ca.pem")  # the stack serves TLS with its dev CA
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtest/locustfile.py",
            "--headless",
            "-u",
            "5",
            "-r",
            "5",
            "-t",
            "4s",
            "--host",
            stack.listen,
            "--only-summary",
            "--exit-code-on-error",
            "1",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for name in ("TopUp", "CreatePayment", "GetBalance"):
        assert f"grpc     {name}" in output, output[-3000:]
    aggregated = next(line for line in output.splitlines() if line.strip().startswith("Aggregated"))
    requests, failures = aggregated.split("|")[0].split()[1:3]
    assert int(requests) > 0
    assert failures == "0(0.00%)", aggregated
