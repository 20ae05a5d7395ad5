"""What `paygate bench` writes into docs/benchmarks.md: the latest run's table, its machine, and a PNG chart.

The run's section goes between two markers in docs/benchmarks.md and replaces the previous run's; everything
else in that file (the before/after history of each change) is left as it is. The chart shows throughput and
p99 against calls in flight, the bare gRPC floor beside Paygate, for the wallet purchase; it needs matplotlib
(`pip install -e '.[bench]'`, which `make bench` does), and without it the section says so instead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

BEGIN = "<!-- paygate bench: latest run (written by `paygate bench`; edits here are overwritten) -->"
END = "<!-- paygate bench: end of latest run -->"
CHART_NAME = "bench-throughput.png"

# The issue 8 targets: (figure, how it is computed from the records, the bound, "min" or "max").
TARGETS = (
    ("wallet purchases / floor", "ratio:wallet_purchase", 0.50, "min"),
    ("balance reads / floor", "ratio:balance_read", 0.70, "min"),
    ("hot creator / spread purchases", "hot_over_spread", 0.90, "min"),
    ("p99 of purchases at half load (ms)", "half_p99:wallet_purchase", 25.0, "max"),
)


def _figure(records: dict[str, dict[str, Any]], how: str) -> float | None:
    kind, _, scenario = how.partition(":")
    if kind == "ratio":
        return records.get(scenario, {}).get("ratio_to_floor")
    if kind == "half_p99":
        return records.get(scenario, {}).get("half_load_p99_ms")
    spread, hot = records.get("wallet_purchase", {}).get("rps"), records.get("hot_creator", {}).get("rps")
    return round(hot / spread, 3) if spread and hot else None


def targets_table(records: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| target | figure | bound | met |", "|---|---|---|---|"]
    for name, how, bound, direction in TARGETS:
        value = _figure(records, how)
        met = "-" if value is None else ("yes" if (value >= bound if direction == "min" else value <= bound) else "no")
        sign = "≥" if direction == "min" else "≤"
        lines.append(f"| {name} | {'-' if value is None else value} | {sign} {bound} | {met} |")
    return lines


def scenario_table(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | rps | p50 ms | p99 ms | errors | floor rps | ratio | half-load rps | half p50 ms | half p99 ms "
        "| floor p99 at that rate | floor p99 at its own half |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['scenario']}{' (' + str(r['ledger_postings']) + ' postings)' if r.get('ledger_postings') else ''}"
            f" | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['floor_rps']} | {r['ratio_to_floor']}"
            f" | {r['half_load_rps']} | {r['half_load_p50_ms']} | {r['half_load_p99_ms']}"
            f" | {r.get('floor_at_same_rate_p99_ms', '-')} | {r.get('floor_half_load_p99_ms', '-')} |"
        )
    return lines


def write_chart(sweep: list[dict[str, Any]], path: Path) -> bool:
    """Throughput and p99 against calls in flight, floor and Paygate; False when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: only `paygate bench` with the bench extra draws

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for side, style in (("floor", "--"), ("paygate", "-")):
        points = sorted((p["in_flight"], p[f"{side}_rps"], p[f"{side}_p99_ms"]) for p in sweep)
        label = "bare gRPC floor" if side == "floor" else "Paygate wallet purchase"
        left.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
        right.plot([p[0] for p in points], [p[2] for p in points], style, marker="o", label=label)
    for axis, title, unit in ((left, "Throughput", "calls/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("calls in flight (all load processes)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def section(machine: dict[str, Any], records: list[dict[str, Any]], sweep: list[dict[str, Any]], chart: bool) -> str:
    by_name = {r["scenario"]: r for r in records if not r.get("ledger_postings")}
    settings = machine["settings"]
    info = machine["machine"]
    lines = [
        BEGIN,
        "",
        f"## Latest `paygate bench` run ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {info['cpu_count']} x {info['cpu_model']}, {info['memory_gib']} GiB, {info['platform']}, Python "
        f"{info['python']}, grpcio {info['grpcio']}, load average {info['load_average_1m_at_start']} at the start. "
        f"Stack: `paygate serve --workers {settings['workers']}` on {settings['database']}; load: "
        f"{settings['processes']} processes x {settings['in_flight_per_process']} calls in flight, "
        f"{settings['duration_s']} s measured after {settings['warmup_s']} s of warm-up; floor: {settings['floor']}; "
        f"transport: {settings.get('transport', 'plaintext')}.",
        "",
        *targets_table(by_name),
        "",
        *scenario_table(records),
        "",
    ]
    if sweep:
        lines += [
            f"![throughput and p99 against calls in flight]({CHART_NAME})"
            if chart
            else "(no chart: matplotlib is not installed — `pip install -e '.[bench]'`)",
            "",
            "| in flight | floor rps | floor p99 ms | Paygate rps | Paygate p99 ms |",
            "|---|---|---|---|---|",
            *(
                f"| {p['in_flight']} | {p['floor_rps']} | {p['floor_p99_ms']} | {p['paygate_rps']} | "
                f"{p['paygate_p99_ms']} |"
                for p in sweep
            ),
            "",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def update_docs(
    docs: Path, machine: dict[str, Any], records: list[dict[str, Any]], sweep: list[dict[str, Any]]
) -> None:
    """Replace the latest-run section of `docs` (appended the first time); the chart goes beside it."""
    chart = bool(sweep) and write_chart(sweep, docs.parent / CHART_NAME)
    block = section(machine, records, sweep, chart)
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    docs.write_text(text)
