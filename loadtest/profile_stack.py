"""Profile a running stack under one scenario's load with py-spy (issue 8: profile before optimising).

    python -m loadtest.profile_stack --scenario wallet_purchase --seconds 15 --out /tmp/profiles

Starts `paygate serve` (tests/support.py), sets the scenario up, drives it with the signed load generator in a
closed loop, and meanwhile records every process of the stack with `py-spy record --nonblocking` (CPU samples;
with `--wall`, wall-clock samples, so time waiting on a lock or a socket shows too). Writes one collapsed-stack
file per process (`<role>.txt`, for speedscope or flamegraph.pl), prints per process the functions with the most
samples, and the CPU each process of the machine used during the run (where the cores went).
py-spy is a development tool: `pip install py-spy` (it needs ptrace rights, which root has).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from loadtest.floor import Floor
from loadtest.generator import LoadGenerator
from loadtest.scenarios import SCENARIOS, Setup
from tests.support import create_throwaway_database, drop_throwaway_database, start_stack

TOP_FUNCTIONS = 25


def roles(stack_state: dict) -> dict[str, int]:  # type: ignore[type-arg]
    return {name: child["pid"] for name, child in stack_state["children"].items() if child.get("pid")}


def record(py_spy: str, pid: int, seconds: float, path: Path, *, wall: bool) -> subprocess.Popen[bytes]:
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw"]
    command += ["--idle"] if wall else []
    return subprocess.Popen(
        [*command, "--nonblocking", "--rate", "100", "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process on the machine, by pid, with a short name."""
    seen: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter(["pid", "cmdline", "name", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is None:
            continue
        cmdline = " ".join(process.info["cmdline"] or []) or process.info["name"] or "?"
        seen[process.info["pid"]] = (cmdline, times.user + times.system)
    return seen


def cpu_report(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float, calls: int
) -> None:
    """Where the machine's cores went during the run: each process's share of one core, and its CPU per call
    (steadier than throughput on a shared machine: compare changes by it)."""
    used = []
    for pid, (name, total) in after.items():
        spent = total - before.get(pid, (name, 0.0))[1]
        if spent > 0.01 * seconds and pid != os.getpid():
            used.append((spent / seconds, pid, name))
    print(f"\n== CPU, share of one core over {seconds:.0f} s ({os.cpu_count()} cores); ms of CPU per call")
    for share, pid, name in sorted(used, reverse=True)[:15]:
        per_call = f"{1000 * share * seconds / calls:6.3f}" if calls else "     -"
        print(f"{share:6.1%}  {per_call}  {pid:>7}  {name[:130]}")


def batch_report(metrics_text: str) -> None:
    """Group commit as the stack's /metrics saw it: operations per batch and outcomes."""
    sums: collections.Counter[str] = collections.Counter()
    for line in metrics_text.splitlines():
        if line.startswith("paygate_group_commit"):
            name, _, value = line.rpartition(" ")
            series = name.split("{")[0]
            if "phase_seconds" in series and series.endswith(("_sum", "_count")):
                phase = name.split('phase="')[1].split('"')[0]
                sums[f"{phase}{series[series.rfind('_') :]}"] += float(value)
            elif series.endswith(("_sum", "_count")):
                sums[series] += float(value)
            elif series.endswith("operations_total"):
                sums[name.split("outcome=")[1].split('"')[1]] += float(value)
    batches = sums.pop("paygate_group_commit_batch_size_count", 0)
    operations = sums.pop("paygate_group_commit_batch_size_sum", 0)
    if batches:
        print(f"\n== group commit: {batches:.0f} batches, {operations / batches:.1f} operations per batch")
        phases = [
            p for p in ("redis", "transaction", "begin", "statements", "commit", "release") if sums.get(f"{p}_count")
        ]
        print(
            "   mean ms per batch: "
            + ", ".join(f"{p} {1000 * sums.pop(f'{p}_sum') / sums.pop(f'{p}_count'):.2f}" for p in phases)
        )
        print("   " + ", ".join(f"{outcome} {count:.0f}" for outcome, count in sorted(sums.items())))


def summarize(path: Path, top: int = TOP_FUNCTIONS) -> list[tuple[str, float]]:
    """Inclusive share of samples per function (a frame counted once per stack)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            inclusive[frame] += count
    return [(frame, count / total) for frame, count in inclusive.most_common(top)] if total else []


def floor_cpu(directory: Path, load: LoadGenerator, plan: object, args: argparse.Namespace) -> None:
    """The same calls against the floor (loadtest/floor.py): what the two bare gRPC hops cost per call."""
    with Floor(directory) as floor:
        before, started = cpu_seconds(), time.monotonic()
        result = load.closed(
            floor.target, plan, in_flight=args.in_flight, phase="f", warmup_s=0, duration_s=args.seconds
        )
        print(f"floor: {result.rps:.0f} calls/s", end="")
        cpu_report(before, cpu_seconds(), time.monotonic() - started, result.ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="wallet_purchase", choices=SCENARIOS)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("profiles"))
    parser.add_argument("--wall", action="store_true", help="wall-clock samples (--idle): waits show too")
    parser.add_argument(
        "--no-spy", action="store_true", help="no py-spy (it costs a quarter of a core per process): CPU shares only"
    )
    parser.add_argument("--floor", action="store_true", help="first the same load on the bare gRPC floor, CPU only")
    parser.add_argument("--rate", type=float, help="an open loop at this many calls/s instead of the closed loop")
    parser.add_argument(
        "--database-url", help="a PostgreSQL/MariaDB server: the stack runs on a throwaway database there"
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pgprof-", dir="/tmp") as tmp, LoadGenerator(args.processes) as load:
        database_url = create_throwaway_database(args.database_url) if args.database_url else None
        stack = start_stack(Path(tmp), workers=args.workers, database_url=database_url, tls=False)
        try:
            key_id, secret = stack.create_key("profile")
            learners = max(8, 4 * args.processes * args.in_flight)
            setup = Setup(
                stack.listen, key_id, secret, learners=learners, purchases=2 * args.processes * args.in_flight
            )
            plan = setup.plan(args.scenario)
            if args.floor:
                floor_cpu(Path(tmp) / "floor", load, plan, args)
            recorders = {
                role: record(py_spy, pid, args.seconds, args.out / f"{role}.txt", wall=args.wall)
                for role, pid in roles(stack.state()).items()
                if not args.no_spy
            }
            result_box: list[object] = []
            cpu_before, started = cpu_seconds(), time.monotonic()
            driver = threading.Thread(
                target=lambda: result_box.append(
                    load.open(stack.listen, plan, rate=args.rate, phase="p", warmup_s=0, duration_s=args.seconds)
                    if args.rate
                    else load.closed(
                        stack.listen, plan, in_flight=args.in_flight, phase="p", warmup_s=0, duration_s=args.seconds
                    )
                )
            )
            driver.start()
            for recorder in recorders.values():
                recorder.wait(timeout=args.seconds + 60)
            driver.join()
            result = result_box[0]
            cpu_report(cpu_before, cpu_seconds(), time.monotonic() - started, getattr(result, "ok", 0))
            batch_report(stack.metrics_text())
            setup.close()
            p50, p99 = result.percentile(50), result.percentile(99)  # type: ignore[attr-defined]
            print(f"{args.scenario}: {getattr(result, 'rps', 0):.0f} calls/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            for role in recorders:
                print(f"\n== {role} (inclusive share of {'wall-clock' if args.wall else 'CPU'} samples)")
                for frame, share in summarize(args.out / f"{role}.txt"):
                    print(f"{share:6.1%}  {frame[:150]}")
        finally:
            stack.stop()
            if database_url:
                drop_throwaway_database(database_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
