"""`paygate bench --smoke` completes and prints well-formed JSON lines. No speed is asserted: the figures of a
smoke run (half a second per run, four calls in flight) mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest.report import BEGIN, END, update_docs
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
    "floor_at_same_rate_p99_ms",
    "floor_half_load_p99_ms",
}
SCENARIOS = ("wallet_purchase", "balance_read")


def test_smoke_run_prints_a_json_object_per_scenario(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nThe history above the run stays.\n")
    result = subprocess.run(
        [sys.executable, "-m", "stack", "bench", "--smoke", "--scenarios", ",".join(SCENARIOS), "--docs", str(docs)],
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
    sweep = [line for line in lines if "sweep" in line]
    assert [line["in_flight"] for line in sweep] == [2, 8], sweep  # the smoke sweep: 1 and 4 per process, 2 processes
    for line in sweep:
        assert line["floor_rps"] >= 0 and line["paygate_rps"] >= 0, line
    assert len(lines) == len(machines) + len(scenarios) + len(sweep)

    # The run's section went into the given file, below what was there, with a row per scenario and sweep level.
    written = docs.read_text()
    assert written.startswith("# Benchmarks\n\nThe history above the run stays.")
    assert BEGIN in written and END in written
    for name in SCENARIOS:
        assert f"| {name} | " in written
    assert written.count("\n| 2 | ") + written.count("\n| 8 | ") == 2


def test_a_tls_smoke_run_calls_the_stack_over_tls(tmp_path: Path) -> None:
    """`--tls`: the stack serves only TLS, so a call answered at all was a TLS call trusting the dev CA (set-up,
    load processes, sweep); the floor stays plaintext and the machine line says both."""
    out = tmp_path / "bench.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "stack", "bench", "--smoke", "--tls", "--scenarios", "balance_read", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines

    machines = [line for line in lines if "machine" in line]
    assert len(machines) == 1, result.stdout
    transport = machines[0]["settings"]["transport"]
    assert transport.startswith("TLS") and "the floor is plaintext" in transport, transport

    scenarios = [line for line in lines if "scenario" in line]
    assert [line["scenario"] for line in scenarios] == ["balance_read"]
    line = scenarios[0]
    assert line.keys() >= SCENARIO_KEYS, line
    for key in SCENARIO_KEYS - {"scenario"}:
        value = line[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, line)
        assert value >= 0, (key, line)
    # The stack answered, in the closed and the open loop, and so did the floor.
    assert line["calls"] > 0 and line["half_load_calls"] > 0 and line["floor_rps"] > 0, line
    sweep = [line for line in lines if "sweep" in line]
    assert [line["in_flight"] for line in sweep] == [2, 8], sweep
    assert all(line["paygate_rps"] > 0 and line["floor_rps"] > 0 for line in sweep), sweep
    assert len(lines) == len(machines) + len(scenarios) + len(sweep)


def test_a_second_run_replaces_the_section_and_keeps_the_rest(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nhistory\n")
    machine = {
        "machine": {
            "cpu_count": 2,
            "cpu_model": "x",
            "memory_gib": 1,
            "platform": "p",
            "python": "3",
            "grpcio": "1",
            "load_average_1m_at_start": 0,
        },
        "settings": {
            "workers": 2,
            "database": "sqlite",
            "processes": 2,
            "in_flight_per_process": 32,
            "duration_s": 1,
            "warmup_s": 0,
            "floor": "f",
        },
    }
    record = {
        "scenario": "wallet_purchase",
        "rps": 10,
        "p50_ms": 1,
        "p99_ms": 2,
        "errors": 0,
        "floor_rps": 20,
        "ratio_to_floor": 0.5,
        "half_load_rps": 5,
        "half_load_p50_ms": 1,
        "half_load_p99_ms": 30,
    }
    update_docs(docs, machine, [record], [])
    update_docs(docs, machine, [{**record, "rps": 11}], [])
    written = docs.read_text()
    assert written.count(BEGIN) == 1 and written.count(END) == 1 and "history" in written
    assert "| wallet_purchase | 11 |" in written and "| wallet_purchase | 10 |" not in written
    # The targets table judges each figure: 0.5 of the floor meets the purchase target, a 30 ms p99 does not.
    assert "| wallet purchases / floor | 0.5 | ≥ 0.5 | yes |" in written
    assert "| p99 of purchases at half load (ms) | 30 | ≤ 25.0 | no |" in written
