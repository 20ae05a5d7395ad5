"""The load generator of `paygate bench`: signed grpc.aio calls from processes of its own, closed or open loop.

Each of `processes` spawned processes keeps one grpc.aio channel and signs every call exactly as a real caller
does (docs/signing.md): the request is serialized once, a fresh nonce and timestamp are drawn, and the HMAC is
computed over exactly the bytes that are sent; responses are deserialized into their message type. Against the
floor (loadtest/floor.py) the signature is ignored but still paid for, so both sides of a comparison cost the
client the same.

- **Closed loop** (`closed`): `in_flight` calls per process, each slot sending its next call when the last one
  ended, for `warmup_s` and then `duration_s`. A call counts when it *ends* inside the measured window; its latency
  runs from before its request was built to its answer. Gives the saturating rate.
- **Open loop** (`open`): calls scheduled at a fixed total `rate`, interleaved across processes, sent whether or
  not earlier ones have answered. A call counts when it was *scheduled* inside the window, and its latency runs
  from its scheduled start, so a stalled server or client shows as latency instead of as fewer calls
  (no coordinated omission).

Every process sends back its raw latencies; percentiles are computed from all of them together (nearest rank).
What to call comes from a picklable `RequestSource` (loadtest/scenarios.py), rebuilt inside each process.
Calls are plaintext, except to a target given a CA with `use_tls` (a TLS stack): those go over TLS trusting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb

# Every PaymentGateway method's path and response type (from the service descriptor, so none is missed).
RESPONSE_TYPES: dict[str, type[Message]] = {
    method_path(method.name): getattr(pb, method.output_type.name)
    for method in pb.DESCRIPTOR.services_by_name["PaymentGateway"].methods
}
CALL_TIMEOUT_S = 30.0
START_DELAY_S = 0.5  # from sending a job to its common start: every process has its channel connected by then
MAX_OUTSTANDING = 20_000  # open loop, per process: past this many unanswered calls, new ones are dropped (counted)
MakeRequest = Callable[[int], tuple[str, bytes]]


class RequestSource(Protocol):
    """What to call: picklable, so that every process can build its own requests."""

    @property
    def key_id(self) -> str: ...

    @property
    def secret(self) -> str: ...

    def requests(self, process: int, processes: int, phase: str) -> MakeRequest:
        """The `i`-th call of one process in one phase, as (method path, serialized request)."""
        ...


@dataclass(frozen=True)
class Job:
    mode: str  # "closed" or "open"
    target: str
    source: Any  # a RequestSource
    phase: str  # distinguishes idempotency keys between runs of the same source
    warmup_s: float
    duration_s: float
    in_flight: int = 0  # closed loop, per process
    rate: float = 0.0  # open loop, calls/s over all processes
    start_at: float = 0.0  # wall time (time.time()) of the common start
    root_certificates: bytes | None = None  # TLS trusting this CA (PEM); None: plaintext


@dataclass
class Outcome:
    """One process's share of a run."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """A run of all processes: successful calls per second in the window, latency of the successful calls."""

    mode: str
    duration_s: float
    ok: int
    errors: int
    error_codes: dict[str, int]
    latencies_ms: list[float]  # sorted

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile in ms; None when no call succeeded."""
        if not self.latencies_ms:
            return None
        rank = max(1, math.ceil(q / 100 * len(self.latencies_ms)))
        return self.latencies_ms[rank - 1]

    @classmethod
    def merge(cls, job: Job, outcomes: list[Outcome]) -> Result:
        codes: Counter[str] = Counter()
        for outcome in outcomes:
            codes.update(outcome.errors)
        return cls(
            mode=job.mode,
            duration_s=job.duration_s,
            ok=sum(o.ok for o in outcomes),
            errors=sum(codes.values()),
            error_codes=dict(sorted(codes.items())),
            latencies_ms=sorted(x for o in outcomes for x in o.latencies_ms),
        )


# -- inside one load process -------------------------------------------------------------------------------


class _Recorder:
    def __init__(self, window_start: float, window_end: float) -> None:
        self.start = window_start
        self.end = window_end
        self.outcome = Outcome()

    def record(self, at: float, latency_s: float, error: str | None) -> None:
        if not self.start <= at < self.end:
            return
        if error is None:
            self.outcome.ok += 1
            self.outcome.latencies_ms.append(latency_s * 1000)
        else:
            self.outcome.errors[error] += 1


class _Caller:
    """One signed call over the process's channel; returns the status code's name on failure."""

    def __init__(self, channel: grpc.aio.Channel, source: Any, make: MakeRequest) -> None:
        self._key_id = source.key_id
        self._secret = source.secret
        self._make = make
        self._callables = {
            path: channel.unary_unary(path, response_deserializer=response_type.FromString)
            for path, response_type in RESPONSE_TYPES.items()
        }

    async def __call__(self, index: int) -> str | None:
        path, body = self._make(index)
        metadata = signing.signed_metadata(self._key_id, self._secret, path, body)
        try:
            await self._callables[path](body, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
        return None


async def _closed_loop(call: _Caller, recorder: _Recorder, in_flight: int) -> None:
    async def slot(first: int) -> None:
        index = first
        while True:
            started = time.perf_counter()
            if started >= recorder.end:
                return
            error = await call(index)
            ended = time.perf_counter()
            recorder.record(ended, ended - started, error)
            index += in_flight

    await asyncio.gather(*(slot(n) for n in range(in_flight)))


async def _open_loop(call: _Caller, recorder: _Recorder, first_at: float, interval_s: float) -> None:
    pending: set[asyncio.Task[None]] = set()

    async def fire(index: int, scheduled: float) -> None:
        error = await call(index)
        recorder.record(scheduled, time.perf_counter() - scheduled, error)

    index = 0
    while True:
        scheduled = first_at + index * interval_s
        if scheduled >= recorder.end:
            break
        # Sleep until the call is due; when behind, still yield, so that the calls already sent make progress.
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        if len(pending) >= MAX_OUTSTANDING:
            recorder.record(scheduled, 0.0, "DROPPED_BY_GENERATOR")
        else:
            task = asyncio.get_running_loop().create_task(fire(index, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        index += 1
    if pending:
        await asyncio.gather(*pending)


def _channel(job: Job) -> grpc.aio.Channel:
    if job.root_certificates is None:
        return grpc.aio.insecure_channel(job.target)
    return grpc.aio.secure_channel(job.target, grpc.ssl_channel_credentials(job.root_certificates))


async def _run(job: Job, process: int, processes: int) -> Outcome:
    make = job.source.requests(process, processes, job.phase)
    async with _channel(job) as channel:
        call = _Caller(channel, job.source, make)
        await asyncio.wait_for(channel.channel_ready(), timeout=START_DELAY_S * 30)
        # The common start, on this process's perf_counter clock.
        t0 = time.perf_counter() + (job.start_at - time.time())
        if t0 > time.perf_counter():
            await asyncio.sleep(t0 - time.perf_counter())
        recorder = _Recorder(t0 + job.warmup_s, t0 + job.warmup_s + job.duration_s)
        if job.mode == "closed":
            await _closed_loop(call, recorder, job.in_flight)
        else:
            interval_s = processes / job.rate
            await _open_loop(call, recorder, t0 + process / job.rate, interval_s)
    return recorder.outcome


def _process_main(conn: Connection, process: int, processes: int) -> None:
    """Run jobs until told to stop (None); each answer is an Outcome or the text of what went wrong."""
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(asyncio.run(_run(job, process, processes)))
        except Exception as error:
            conn.send(f"{type(error).__name__}: {error}")


# -- the parent's handle -----------------------------------------------------------------------------------


class LoadGenerator:
    """`processes` spawned load processes, kept for every run (start-up is paid once)."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("at least one load process is needed")
        context = multiprocessing.get_context("spawn")
        self.processes = processes
        self._tls: dict[str, bytes] = {}  # target -> the CA its calls trust (PEM)
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for n in range(processes):
            ours, theirs = context.Pipe()
            proc = context.Process(target=_process_main, args=(theirs, n, processes), daemon=True)
            proc.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(proc)

    def use_tls(self, target: str, root_certificates: bytes | None) -> None:
        """Calls to `target` go over TLS trusting this CA (PEM) from now on; None: plaintext again (the default)."""
        if root_certificates is None:
            self._tls.pop(target, None)
        else:
            self._tls[target] = root_certificates

    def closed(
        self, target: str, source: RequestSource, *, in_flight: int, warmup_s: float, duration_s: float, phase: str
    ) -> Result:
        return self.run(Job("closed", target, source, phase, warmup_s, duration_s, in_flight=in_flight))

    def open(
        self, target: str, source: RequestSource, *, rate: float, warmup_s: float, duration_s: float, phase: str
    ) -> Result:
        if rate <= 0:
            raise ValueError("an open loop needs a positive rate")
        return self.run(Job("open", target, source, phase, warmup_s, duration_s, rate=rate))

    def run(self, job: Job) -> Result:
        job = replace(job, start_at=time.time() + START_DELAY_S, root_certificates=self._tls.get(job.target))
        for conn in self._conns:
            conn.send(job)
        answers = [conn.recv() for conn in self._conns]
        failures = [answer for answer in answers if isinstance(answer, str)]
        if failures:
            raise RuntimeError(f"a load process failed: {failures[0]}")
        return Result.merge(job, answers)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._procs.clear()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
