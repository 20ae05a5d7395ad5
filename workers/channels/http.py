"""The one network client of the channels (docs/architecture.md, "Channels"): every provider call goes through
`ChannelHttp.send`, and this is the one place transport errors are translated.

Per channel: a connection pool, a connect and a read timeout, a bound on calls in flight (a slow provider holds
at most that many worker threads), and a circuit breaker that fails fast with UNAVAILABLE after consecutive
failures, so one hanging channel cannot take the workers' threads from wallet payments and the other channels.

Retries: a call that provably never reached the provider (the connection was refused or never completed) is
retried whatever it is; a call that may have reached it (a timeout after sending, a dropped connection, a 5xx)
is retried only when it is idempotent — a query, or a create the provider deduplicates by our id. Anything
else is reported as `MaybeDelivered`, and the attempt becomes UNKNOWN until a query tells.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from runtime.errors import Unavailable
from workers.channels.base import HttpCall, HttpReply


@dataclass(frozen=True)
class ChannelLimits:
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    # Calls at once to this provider from one worker process. Each holds one of the worker's threads while the
    # provider takes its time, so this stays well below the worker's thread pool: a hanging provider can hold
    # at most this many, and the rest keep serving wallet payments and the other channels.
    max_in_flight: int = 4
    # How long a call waits for one of those slots before UNAVAILABLE. Zero: a busy channel answers at once,
    # rather than a waiting call holding a thread too.
    queue_timeout_s: float = 0.0
    retries: int = 2  # extra tries of a call that is safe to repeat
    retry_backoff_s: float = 0.1
    breaker_failures: int = 5  # consecutive failures that open the circuit
    breaker_open_s: float = 10.0  # how long it stays open before one trial call


class TransportFailed(Exception):
    """The provider could not be reached or did not answer. `maybe_delivered`: the request may have arrived."""

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class CircuitOpen(Unavailable):
    reason = "CHANNEL_UNAVAILABLE"


class CircuitBreaker:
    """closed → (N consecutive failures) → open for `open_s` → one trial call → closed or open again."""

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._open_s = open_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._trial_running = False

    def allow(self) -> bool:
        with self._lock:
            if self._failures < self._threshold:
                return True
            if self._clock() < self._open_until or self._trial_running:
                return False
            self._trial_running = True  # half-open: exactly one call finds out whether the provider is back
            return True

    def record(self, success: bool) -> None:
        with self._lock:
            self._trial_running = False
            if success:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self._threshold:
                self._open_until = self._clock() + self._open_s

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._failures >= self._threshold and self._clock() < self._open_until


class ChannelHttp:
    def __init__(
        self,
        channel: str,
        limits: ChannelLimits,
        *,
        observe: Callable[[str, str, float], None] | None = None,
        refused: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.channel = channel
        self.limits = limits
        self._observe = observe  # (purpose, outcome, seconds): the provider-call histogram
        self._refused = refused or (lambda _reason: None)  # (reason): calls refused before sending
        self._slots = threading.BoundedSemaphore(limits.max_in_flight)
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self.breaker = CircuitBreaker(limits.breaker_failures, limits.breaker_open_s)
        self._client = httpx.Client(
            timeout=httpx.Timeout(limits.read_timeout_s, connect=limits.connect_timeout_s),
            limits=httpx.Limits(max_connections=limits.max_in_flight, max_keepalive_connections=limits.max_in_flight),
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def check_available(self) -> None:
        """Fail fast, before anything is written, while the circuit is open or every slot is taken. (A slot can
        still be gone by the time the call is sent; `send` checks again, and the attempt is then resumed by the
        caller's retry with the same id.)"""
        if self.breaker.is_open:
            self._refused("circuit_open")
            raise CircuitOpen(self._unavailable_message())
        if self._in_flight >= self.limits.max_in_flight:
            self._refused("busy")
            raise self._busy()

    def send(self, call: HttpCall) -> HttpReply:
        if not self.breaker.allow():
            self._refused("circuit_open")
            raise CircuitOpen(self._unavailable_message())
        if not self._slots.acquire(timeout=self.limits.queue_timeout_s):
            self._refused("busy")
            raise self._busy()
        with self._count_lock:  # read without the lock by check_available: a hint; the semaphore is the bound
            self._in_flight += 1
        try:
            reply = self._send_with_retries(call)
        except TransportFailed:
            self.breaker.record(False)
            raise
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self._slots.release()
        self.breaker.record(reply.status < 500)
        return reply

    def _send_with_retries(self, call: HttpCall) -> HttpReply:
        last: TransportFailed | None = None
        reply: HttpReply | None = None
        for attempt in range(1 + self.limits.retries):
            if attempt:
                time.sleep(self.limits.retry_backoff_s * attempt)
            try:
                reply = self._send_once(call)
            except TransportFailed as failure:
                last = failure
                if failure.maybe_delivered and not call.idempotent:
                    raise
                continue
            if reply.status < 500 or not call.idempotent:
                return reply
        if reply is not None:
            return reply  # a 5xx every time: the provider's own answer, for the provider module to read
        assert last is not None
        raise last

    def _send_once(self, call: HttpCall) -> HttpReply:
        started = time.perf_counter()
        outcome = "error"
        try:
            response = self._client.request(call.method, call.url, headers=list(call.headers), content=call.body)
            outcome = str(response.status_code)
            return HttpReply(
                response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            outcome = "connect_failed"
            message = f"{self.channel}: could not connect ({type(error).__name__})"
            raise TransportFailed(message, maybe_delivered=False) from error
        except httpx.TimeoutException as error:
            outcome = "timeout"
            message = f"{self.channel}: no answer in time ({type(error).__name__})"
            raise TransportFailed(message, maybe_delivered=True) from error
        except httpx.HTTPError as error:
            message = f"{self.channel}: transport failed ({type(error).__name__})"
            raise TransportFailed(message, maybe_delivered=True) from error
        finally:
            if self._observe is not None:
                self._observe(call.purpose, outcome, time.perf_counter() - started)

    def _busy(self) -> Unavailable:
        return Unavailable(
            f"the {self.channel} channel has {self.limits.max_in_flight} calls in flight already; retry shortly",
            retry_after_ms=max(100, int(self.limits.queue_timeout_s * 1000)),
        )

    def _unavailable_message(self) -> str:
        return (
            f"the {self.channel} channel is failing ({self.limits.breaker_failures} failed calls in a row); "
            f"calls to it are refused for {self.limits.breaker_open_s:g} s — retry later or use another method"
        )
