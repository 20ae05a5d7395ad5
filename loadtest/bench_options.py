"""The options of `paygate bench` (loadtest/paygate_bench.py): defaults, the smoke set, and the flags of
stack/cli.py read into one frozen `Options`."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest.scenarios import SCENARIOS


@dataclass(frozen=True)
class Options:
    scenarios: tuple[str, ...] = SCENARIOS
    duration_s: float = 10.0
    warmup_s: float = 2.0
    processes: int = 2
    in_flight: int = 32
    workers: int = 2
    database_url: str | None = None
    fresh_database: bool = False
    half_load: float = 0.5
    smoke: bool = False
    out: Path | None = None
    sweep: tuple[int, ...] = (1, 4, 16, 32, 64)
    docs: Path | None = Path("docs/benchmarks.md")
    ledger_postings: int = 0
    repeat: int = 1
    tls: bool = False  # --tls: the stack serves TLS and every client of it trusts its dev CA; the floor is plaintext

    @property
    def learners(self) -> int:
        """Funded learners: four per call in flight, so concurrent calls rarely wait for one wallet's lock."""
        return max(8, 4 * self.processes * self.in_flight)

    @property
    def purchases(self) -> int:
        return max(8, 2 * self.processes * self.in_flight)

    @property
    def database(self) -> str:
        if not self.database_url:
            return "sqlite"
        return self.database_url.split(":", 1)[0].split("+", 1)[0]

    @property
    def transport(self) -> str:
        """What the figures were measured over (`settings.transport` of the machine line and the docs section)."""
        if self.tls:
            return "TLS (paygate serve with its dev CA; the floor is plaintext)"
        return "plaintext (paygate serve --plaintext; the floor is plaintext too)"


SMOKE = {
    "duration_s": 0.5,
    "warmup_s": 0.2,
    "processes": 2,
    "in_flight": 4,
    "workers": 1,
    "sweep": (1, 4),
    "docs": None,
}


def options_from_args(args: argparse.Namespace) -> Options:
    """Flags given win; the rest come from the smoke set when --smoke, else from the defaults."""
    base = {**asdict(Options()), **(SMOKE if args.smoke else {})}
    given = {
        name: getattr(args, name, None)
        for name in (
            "duration_s",
            "warmup_s",
            "processes",
            "in_flight",
            "workers",
            "database_url",
            "half_load",
            "repeat",
        )
    }
    base.update({name: value for name, value in given.items() if value is not None})
    if args.scenarios:
        names = tuple(n.strip() for n in args.scenarios.split(",") if n.strip())
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown or not names:
            raise ValueError(
                f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCENARIOS)}"
            )
        base["scenarios"] = names
    base.update(smoke=bool(args.smoke), fresh_database=bool(getattr(args, "fresh_database", False)), out=args.out)
    base["tls"] = bool(getattr(args, "tls", False))
    if getattr(args, "sweep", None) is not None:
        base["sweep"] = tuple(int(n) for n in args.sweep.split(",") if n.strip()) if args.sweep.strip() else ()
    if getattr(args, "docs", None):
        base["docs"] = args.docs
    if getattr(args, "no_docs", False):
        base["docs"] = None
    if getattr(args, "ledger_postings", None):
        base["ledger_postings"] = args.ledger_postings
    options = Options(**base)
    if options.duration_s <= 0 or options.warmup_s < 0 or options.processes < 1 or options.in_flight < 1:
        raise ValueError("--duration-s must be positive, --warmup-s not negative, --processes and --in-flight >= 1")
    if options.workers < 1 or not 0 < options.half_load <= 1:
        raise ValueError("--workers must be >= 1 and --half-load in (0, 1]")
    if any(n < 1 for n in options.sweep) or options.ledger_postings < 0 or not 1 <= options.repeat <= 9:
        raise ValueError("--sweep takes calls in flight >= 1, --ledger-postings cannot be negative, --repeat is 1-9")
    return options
