"""`paygate bench` (issue 8): each scenario on a real stack beside the bare gRPC floor, with one load generator.

    paygate bench                                   # every scenario, SQLite, 2 workers, 2 processes x 32 in flight
    paygate bench --scenarios wallet_purchase,hot_creator --duration-s 20
    paygate bench --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test --fresh-database
    paygate bench --smoke                           # tiny durations, for the test suite: figures mean nothing
    paygate bench --tls                             # the stack over TLS (its dev CA); the floor stays plaintext

One run: the floor (loadtest/floor.py) and the load processes (loadtest/generator.py) start once; a stack
(`paygate serve --workers N --plaintext`, tests/support.py; with `--tls`, TLS with the dev certificates serve
makes, trusted by the set-up client and the load processes) starts for the wallet scenarios, and another one with
the channel simulator for `channel_purchase`. For each scenario (loadtest/scenarios.py): its set-up, outside any
timed window; the floor under the scenario's own signed calls (closed loop); the stack under the same calls
(closed loop: the saturating rate and its latency); then the stack in an open loop at `--half-load` (default
0.5) of that rate, latency timed from each call's scheduled start, and the floor in the same open loop at that
rate and at half its own (what the machine and the load generator alone give that tail). stdout gets one JSON
object for the machine, then one per scenario as it finishes (also to `--out FILE`); progress goes to stderr.

Per scenario: rps (successful calls/s in the window), p50/p95/p99_ms, calls, errors (and error_codes), floor_rps,
ratio_to_floor, half_load_rps (the offered rate), half_load_achieved_rps, half_load_p50/p95/p99_ms,
half_load_errors, floor_at_same_rate_p99_ms, floor_half_load_rps and floor_half_load_p99_ms. Nothing here
asserts a speed.

The channel stack runs with PAYGATE_CHANNEL_MAX_IN_FLIGHT raised to the generator's concurrency: at the default
of 4 per worker most calls would be refused at once, and the figure would measure the refusal.

Then a sweep (`--sweep`, calls in flight per load process) of the floor and the stack under wallet purchases,
one JSON object per level, and — unless `--smoke` or `--no-docs` — the run's section of docs/benchmarks.md with
the targets of issue 8, every figure, the machine, and a PNG chart of the sweep (loadtest/report.py).

`--ledger-postings N` then seeds the wallet stack's database with a ledger of N postings (`paygate ledger seed`,
one account per 10 postings) and measures the wallet scenarios again on it: their records carry
`ledger_postings` and `ratio_to_empty` (the issue's "within 10 % of the empty-ledger figure").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from loadtest.bench_options import Options, options_from_args
from loadtest.floor import Floor
from loadtest.generator import LoadGenerator, Result
from loadtest.report import update_docs
from loadtest.scenarios import CHANNEL_SCENARIOS, Setup
from tests.support import Stack, create_throwaway_database, drop_throwaway_database, start_stack

Emit = Callable[[dict[str, Any]], None]
SEED_TIMEOUT_S = 3600  # a million postings take about a minute on SQLite, three on PostgreSQL


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def machine(options: Options) -> dict[str, Any]:
    try:
        memory_gib: float | None = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gib": memory_gib,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            # Anything else running shares the cores with the bench: a load near 0 at the start is a quiet machine.
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "settings": {
            "database": options.database,
            "workers": options.workers,
            "processes": options.processes,
            "in_flight_per_process": options.in_flight,
            "warmup_s": options.warmup_s,
            "duration_s": options.duration_s,
            "half_load": options.half_load,
            "smoke": options.smoke,
            "floor": "grpc.aio unary pass-through proxy (TCP) -> 2 grpc.aio echo processes (Unix sockets)",
            "transport": options.transport,
        },
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def record(scenario: str, floor: Result, closed: Result, half: Result, half_rate: float) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "rps": round(closed.rps, 1),
        "p50_ms": _ms(closed.percentile(50)),
        "p95_ms": _ms(closed.percentile(95)),
        "p99_ms": _ms(closed.percentile(99)),
        "calls": closed.ok,
        "errors": closed.errors,
        "error_codes": closed.error_codes,
        "floor_rps": round(floor.rps, 1),
        "floor_p50_ms": _ms(floor.percentile(50)),
        "floor_p99_ms": _ms(floor.percentile(99)),
        "floor_errors": floor.errors,
        "ratio_to_floor": round(closed.rps / floor.rps, 3) if floor.rps > 0 else None,
        "half_load_rps": round(half_rate, 1),
        "half_load_achieved_rps": round(half.rps, 1),
        "half_load_p50_ms": _ms(half.percentile(50)),
        "half_load_p95_ms": _ms(half.percentile(95)),
        "half_load_p99_ms": _ms(half.percentile(99)),
        "half_load_calls": half.ok,
        "half_load_errors": half.errors,
    }


def _progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def measure(
    scenario: str,
    setup: Setup,
    load: LoadGenerator,
    floor_target: str,
    stack_target: str,
    options: Options,
    tag: str = "",
) -> dict[str, Any]:
    """One scenario: `--repeat` pairs of (floor, stack) closed loops, back to back, then the stack's open loop at
    half the median pair's rate. The record carries the pair with the median ratio to the floor (and every pair's
    ratio in `ratio_runs`): on a shared machine one pair can be off by a quarter. `tag` keeps the order ids of a
    second measurement on the same stack apart from the first's (the phases name them)."""
    _progress(f"{scenario}: set-up")
    plan = setup.plan(scenario)
    timing = {"warmup_s": options.warmup_s, "duration_s": options.duration_s}
    pairs: list[tuple[Result, Result]] = []
    for run in range(options.repeat):
        _progress(f"{scenario}: floor, closed loop ({run + 1}/{options.repeat})")
        floor = load.closed(floor_target, plan, in_flight=options.in_flight, phase=f"{tag}f{run}", **timing)
        _progress(f"{scenario}: stack, closed loop (floor {floor.rps:.0f}/s)")
        closed = load.closed(stack_target, plan, in_flight=options.in_flight, phase=f"{tag}c{run}", **timing)
        pairs.append((floor, closed))
    ratios = [closed.rps / floor.rps if floor.rps > 0 else 0.0 for floor, closed in pairs]
    floor, closed = pairs[sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]]
    # An open loop needs a rate; with nothing served at all, offer one call a second to show the failure.
    half_rate = max(closed.rps * options.half_load, 1.0)
    _progress(f"{scenario}: stack, open loop at {half_rate:.0f}/s (closed {closed.rps:.0f}/s)")
    half = load.open(stack_target, plan, rate=half_rate, phase=f"{tag}o", **timing)
    # The same open loop on the floor, at the stack's half rate and at the floor's own: how much of the tail is
    # the machine and the load generator rather than Paygate (docs/benchmarks.md).
    floor_same = load.open(floor_target, plan, rate=half_rate, phase=f"{tag}fo", **timing)
    floor_half = load.open(floor_target, plan, rate=max(floor.rps * options.half_load, 1.0), phase=f"{tag}fh", **timing)
    return {
        **record(scenario, floor, closed, half, half_rate),
        "floor_at_same_rate_p99_ms": _ms(floor_same.percentile(99)),
        "floor_half_load_rps": round(floor.rps * options.half_load, 1),
        "floor_half_load_p99_ms": _ms(floor_half.percentile(99)),
        "ratio_runs": [round(r, 3) for r in ratios],
    }


@contextmanager
def _database(options: Options) -> Iterator[str | None]:
    """The stack's database: SQLite in its data directory, the given URL, or a throwaway database on that server."""
    if not (options.database_url and options.fresh_database):
        yield options.database_url
        return
    url = create_throwaway_database(options.database_url)
    try:
        yield url
    finally:
        drop_throwaway_database(url)


def _run_group(
    names: list[str], directory: Path, database_url: str | None, load: LoadGenerator, floor: Floor, options: Options
) -> Iterator[dict[str, Any]]:
    """One stack (with the channel simulator when the scenarios need it) for `names`, measured in turn; for the
    wallet stack also the sweep and, with --ledger-postings, the same scenarios again on a seeded ledger."""
    channels = any(name in CHANNEL_SCENARIOS for name in names)
    extra_env = {"PAYGATE_CHANNEL_MAX_IN_FLIGHT": str(max(4, options.processes * options.in_flight))}
    if os.environ.get("PAYGATE_ACCESS_LOG"):  # measure the gateway with its access log on or off
        extra_env["PAYGATE_ACCESS_LOG"] = os.environ["PAYGATE_ACCESS_LOG"]
    shape = f"{options.database}, channels={channels}{', TLS' if options.tls else ''}"
    _progress(f"starting paygate serve --workers {options.workers} ({shape})")
    # Plaintext like the floor it is compared with (docs/decisions.md #65), unless --tls: then TLS, its dev CA.
    stack: Stack = start_stack(
        directory,
        workers=options.workers,
        database_url=database_url,
        channels=channels,
        extra_env=extra_env,
        tls=options.tls,
    )
    setup: Setup | None = None
    try:
        # --tls: every client of the stack (set-up and load processes) trusts its dev CA; the floor stays plaintext.
        ca = Path(stack.ca_file).read_bytes() if stack.ca_file else None
        load.use_tls(stack.listen, ca)
        key_id, secret = stack.create_key("bench")
        setup = Setup(
            stack.listen, key_id, secret, learners=options.learners, purchases=options.purchases, root_certificates=ca
        )
        empty: dict[str, dict[str, Any]] = {}
        for name in names:
            empty[name] = measure(name, setup, load, floor.target, stack.listen, options)
            yield empty[name]
        if not channels:
            yield from _sweep(setup, load, floor.target, stack.listen, options)
        if options.ledger_postings and not channels:
            _seed(stack, options)
            for name in names:
                record = measure(name, setup, load, floor.target, stack.listen, options, tag="L")
                rps = empty[name]["rps"]
                ratio = round(record["rps"] / rps, 3) if rps else None
                yield {**record, "ledger_postings": options.ledger_postings, "ratio_to_empty": ratio}
    finally:
        if setup is not None:
            setup.close()
        load.use_tls(stack.listen, None)
        code = stack.stop()
        if code != 0:
            _progress(f"paygate serve exited with {code}; its log: {stack.log_path}")


def _sweep(
    setup: Setup, load: LoadGenerator, floor_target: str, stack_target: str, options: Options
) -> Iterator[dict[str, Any]]:
    """Wallet purchases at each --sweep level of calls in flight per process, floor and stack (closed loops)."""
    plan = setup.plan("wallet_purchase")
    timing = {"warmup_s": min(options.warmup_s, 1.0), "duration_s": max(options.duration_s / 2, 0.5)}
    for level in options.sweep:
        _progress(f"sweep: {level} in flight per process")
        floor = load.closed(floor_target, plan, in_flight=level, phase=f"sf{level}", **timing)
        paygate = load.closed(stack_target, plan, in_flight=level, phase=f"sp{level}", **timing)
        yield {
            "sweep": "wallet_purchase",
            "in_flight": level * options.processes,
            "floor_rps": round(floor.rps, 1),
            "floor_p99_ms": _ms(floor.percentile(99)),
            "paygate_rps": round(paygate.rps, 1),
            "paygate_p99_ms": _ms(paygate.percentile(99)),
            "paygate_errors": paygate.errors,
        }


def _seed(stack: Stack, options: Options) -> None:
    """`paygate ledger seed` against the running stack's database (stack/seed_ledger.py): a consistent ledger of
    --ledger-postings postings, one account per ten, under an owner of its own."""
    postings = options.ledger_postings
    _progress(f"seeding a ledger of {postings} postings and {max(postings // 10, 10)} accounts")
    command = ["ledger", "seed", "--postings", str(postings), "--accounts", str(max(postings // 10, 10))]
    result = subprocess.run(
        [sys.executable, "-m", "stack", *command, "--owner", "bench-seed", "--data-dir", str(stack.data_dir)],
        env=stack.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=SEED_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"paygate ledger seed failed: {result.stderr[-2000:]}")


def run(options: Options, emit: Emit) -> None:
    emit(machine(options))
    groups = [
        [n for n in options.scenarios if n not in CHANNEL_SCENARIOS],
        [n for n in options.scenarios if n in CHANNEL_SCENARIOS],
    ]
    # A short path: Unix socket paths are limited to about 100 characters.
    with tempfile.TemporaryDirectory(prefix="pgbench-", dir="/tmp" if os.path.isdir("/tmp") else None) as tmp:
        directory = Path(tmp)
        with (
            _database(options) as database_url,
            LoadGenerator(options.processes) as load,
            Floor(directory / "floor") as floor,
        ):
            _progress(f"floor at {floor.target}; {options.processes} load processes x {options.in_flight} in flight")
            for n, names in enumerate(groups):
                if names:
                    for line in _run_group(names, directory / f"stack-{n}", database_url, load, floor, options):
                        emit(line)


def main(args: argparse.Namespace) -> int:
    """The `paygate bench` command (stack/commands.py): 0 when every scenario ran, 2 on bad options."""
    try:
        options = options_from_args(args)
    except ValueError as error:
        print(f"paygate bench: {error}", file=sys.stderr)
        return 2
    out = options.out.open("w") if options.out else None
    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        text = json.dumps(line)
        print(text, flush=True)
        if out is not None:
            out.write(text + "\n")
            out.flush()

    try:
        run(options, emit)
    finally:
        if out is not None:
            out.close()
    if options.docs is not None:
        records = [line for line in lines if "scenario" in line]
        update_docs(options.docs, lines[0], records, [line for line in lines if "sweep" in line])
        _progress(f"wrote the run's section of {options.docs}")
    return 0
