"""When a client call is tried again, and after how long (docs/client.md, "Retries and idempotency").

A refusal is retried when its code is in the policy's `retry_codes` (UNAVAILABLE, ABORTED) and the method is safe
to resend — every mutating method carries its caller-chosen idempotency key, so a resent purchase is the same
purchase — or when it is a limit's refusal (RESOURCE_EXHAUSTED) that says with a `RetryInfo` when to come back:
those are refused before anything is applied, so any method may resend them. Nothing else is retried.

The wait before a retry is the server's `RetryInfo` delay when it sent one, else exponential back-off with full
jitter: uniform(0, min(max_backoff_s, initial_backoff_s * multiplier ** (retry - 1))). The number of attempts is
bounded, and so is the whole call: every attempt gets what is left of the call's deadline, and a retry whose wait
would end past that deadline is not made — the last error is raised at once instead.

This module decides; the sync and asyncio clients only sleep and resend (each attempt signed anew: a fresh nonce
and timestamp, since the gateway refuses a nonce it has seen).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from paygate.errors import PaygateError

# Methods with no idempotency key: a resend after an unknown outcome could act twice (a second endpoint, a second
# rotation) or answer NOT_FOUND for a delete that did happen. They are retried only when refused before applying.
NOT_IDEMPOTENT_METHODS = frozenset({"CreateWebhookEndpoint", "DeleteWebhookEndpoint", "RotateWebhookEndpointSecret"})


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries. `RetryPolicy(max_attempts=1)` (`NO_RETRY`) never does."""

    max_attempts: int = 6
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 3.0
    multiplier: float = 2.0
    retry_codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
    # Retried only when the refusal carries a RetryInfo, after exactly that delay.
    retry_info_codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})
    # A RetryInfo delay longer than this is not waited for (the error is raised), whatever the deadline allows.
    max_retry_info_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (1: no retries)")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_retry_info_delay_s < 0:
            raise ValueError("max_retry_info_delay_s must not be negative")

    def backoff_cap_s(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1 for the first retry): the exponential curve, capped."""
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        if self.initial_backoff_s == 0:
            return 0.0
        # In logarithms: initial * multiplier ** (retry - 1) overflows a float long before a retry count does.
        exponent = math.log(self.initial_backoff_s) + (retry - 1) * math.log(self.multiplier)
        if exponent >= math.log(self.max_backoff_s):
            return self.max_backoff_s
        return min(self.max_backoff_s, max(self.initial_backoff_s, math.exp(exponent)))

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Full jitter: a uniform draw between 0 and the cap, so retrying callers spread out."""
        return (rng or _RANDOM).uniform(0.0, self.backoff_cap_s(retry))


_RANDOM = random.Random()
DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class RetryEvent:
    """One failed attempt that will be tried again (for a client's `on_retry` observer: logs, metrics, tests)."""

    method: str
    attempt: int  # the attempt that failed, from 1
    error: PaygateError
    delay_s: float  # the wait before the next attempt
    from_retry_info: bool  # the delay is the server's RetryInfo, not the back-off curve


@dataclass
class Attempts:
    """The retry state of one call: which attempt this is and what is left of its deadline."""

    method: str
    policy: RetryPolicy
    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None
    number: int = 0
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be more than 0")
        self.deadline = self.clock() + self.timeout_s

    def remaining_s(self) -> float:
        return self.deadline - self.clock()

    def start(self) -> float:
        """Count a new attempt; its gRPC deadline is what is left of the call's (never zero: gRPC needs > 0)."""
        self.number += 1
        return max(self.remaining_s(), 0.001)

    def retry_after(self, error: PaygateError) -> RetryEvent | None:
        """The next attempt after `error` (its wait), or None: raise `error`."""
        if self.number >= self.policy.max_attempts:
            return None
        code = error.code()
        # A negative delay (a server's mistake) means "now"; sleeping a negative time would raise.
        server_delay = None if error.retry_delay_s is None else max(0.0, error.retry_delay_s)
        if code in self.policy.retry_info_codes and server_delay is not None:
            delay, from_server = server_delay, True
        elif code in self.policy.retry_codes and self.method not in NOT_IDEMPOTENT_METHODS:
            from_server = server_delay is not None
            delay = server_delay if server_delay is not None else self.policy.backoff_s(self.number, self.rng)
        else:
            return None
        if from_server and delay > self.policy.max_retry_info_delay_s:
            return None
        if delay >= self.remaining_s():
            return None  # the next attempt would begin after the call's deadline
        return RetryEvent(self.method, self.number, error, delay, from_server)


# An event stream ended with one of these is opened again (the gateway or its worker went away, or a limit was full).
STREAM_RECONNECT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)


def reconnect_delay_s(failures: int, max_backoff_s: float, rng: random.Random | None = None) -> float:
    """The wait before re-opening a broken event stream: doubling from 0.1 s up to `max_backoff_s`, with half of
    it jittered (a stream must come back promptly, so never near zero)."""
    cap = min(max_backoff_s, 0.05 * 2 ** min(failures, 30))
    return cap * (rng or _RANDOM).uniform(0.5, 1.0)
