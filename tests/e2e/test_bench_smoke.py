"""`paygate bench --smoke` completes and prints well-formed JSON lines. No speed is asserted: the figures of a
smoke run (half a second per run, four calls in flight) mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO_ROOT

SCENARIO_KEYS = {
    "scenario",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors",
    "floor_rps",
    "ratio_to_floor",
    "half_load_rps",
    "half_load_p50_ms",
    "half_load_p99_ms",
}
SCENARIOS = ("wallet_purchase", "balance_read")


def test_smoke_run_prints_a_json_object_per_scenario() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stack", "bench", "--smoke", "--scenarios", ",".join(SCENARIOS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    machines = [line for line in lines if "machine" in line]
    assert len(machines) == 1, result.stdout
    assert machines[0]["machine"]["cpu_count"] >= 1
    assert machines[0]["machine"]["platform"]

    scenarios = [line for line in lines if "scenario" in line]
    assert [line["scenario"] for line in scenarios] == list(SCENARIOS)
    for line in scenarios:
        assert line.keys() >= SCENARIO_KEYS, line
        for key in SCENARIO_KEYS - {"scenario"}:
            value = line[key]
            assert isinstance(value, int | float) and not isinstance(value, bool), (key, line)
            assert value >= 0, (key, line)
    assert len(lines) == len(machines) + len(scenarios)
