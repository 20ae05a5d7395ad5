"""The retry decisions of the clients (paygate/retry.py, docs/client.md "Retries and idempotency"): back-off
bounds, which refusals are retried for which methods, RetryInfo honoured, and the deadline budget."""

from __future__ import annotations

import random
from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from paygate.errors import PaygateError, error_from_status
from paygate.retry import NO_RETRY, NOT_IDEMPOTENT_METHODS, Attempts, RetryPolicy, reconnect_delay_s
from paygate.scopes import METHOD_SCOPES

policies = st.builds(
    lambda initial, extra, multiplier, attempts: RetryPolicy(
        max_attempts=attempts, initial_backoff_s=initial, max_backoff_s=initial + extra, multiplier=multiplier
    ),
    initial=st.floats(min_value=0, max_value=10, allow_nan=False),
    extra=st.floats(min_value=0, max_value=100, allow_nan=False),
    multiplier=st.floats(min_value=1, max_value=1e6, allow_nan=False),
    attempts=st.integers(min_value=1, max_value=20),
)


@given(policies, st.integers(min_value=1, max_value=10_000))
def test_the_back_off_cap_stays_between_the_initial_and_the_maximum(policy: RetryPolicy, retry: int) -> None:
    cap = policy.backoff_cap_s(retry)
    assert min(policy.initial_backoff_s, policy.max_backoff_s) <= cap <= policy.max_backoff_s


@given(policies, st.integers(min_value=1, max_value=10_000))
def test_the_back_off_cap_never_shrinks_from_one_retry_to_the_next(policy: RetryPolicy, retry: int) -> None:
    assert policy.backoff_cap_s(retry) <= policy.backoff_cap_s(retry + 1)


@given(policies, st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_full_jitter_draws_between_zero_and_the_cap(policy: RetryPolicy, retry: int, seed: int) -> None:
    delay = policy.backoff_s(retry, random.Random(seed))
    assert 0 <= delay <= policy.backoff_cap_s(retry)


def test_the_curve_doubles_from_the_initial_back_off_until_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=3.0, multiplier=2.0)
    assert [policy.backoff_cap_s(n) for n in range(1, 7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.0, 3.0])


def test_full_jitter_spreads_over_the_whole_range() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=1.0)
    rng = random.Random(7)
    draws = [policy.backoff_s(1, rng) for _ in range(2000)]
    assert min(draws) < 0.05 and max(draws) > 0.95  # not "equal jitter": early retries may go almost at once


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0.1, max_value=60, allow_nan=False))
def test_a_stream_reconnects_after_at_most_its_maximum_and_never_at_once(failures: int, maximum: float) -> None:
    delay = reconnect_delay_s(failures, maximum, random.Random(failures))
    cap = min(maximum, 0.05 * 2 ** min(failures, 30))
    assert cap / 2 <= delay <= cap


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_backoff_s": 2.0, "max_backoff_s": 1.0}, "backoffs"),
        ({"initial_backoff_s": -1.0}, "backoffs"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max_retry_info_delay_s": -1.0}, "max_retry_info_delay_s"),
    ],
)
def test_a_bad_policy_is_refused_clearly(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**arguments)  # type: ignore[arg-type]


# -- decisions ------------------------------------------------------------------------------------------------


class Clock:
    """Time that moves only when the test says (the budget is arithmetic, not a wait)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(code: grpc.StatusCode, retry_delay_s: float | None = None) -> PaygateError:
    status = status_pb2.Status(code=code.value[0], message="refused")
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=code.name, domain="paygate.v1"))
    status.details.append(info)
    if retry_delay_s is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=_duration(retry_delay_s)))
        status.details.append(retry)
    return error_from_status(code, "refused", (("grpc-status-details-bin", status.SerializeToString()),))


def _duration(seconds: float):  # type: ignore[no-untyped-def]
    from google.protobuf import duration_pb2  # noqa: PLC0415

    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def attempts(method: str = "CreatePayment", policy: RetryPolicy | None = None, timeout_s: float = 30) -> Attempts:
    state = Attempts(method, policy or RetryPolicy(), timeout_s, clock=Clock(), rng=random.Random(1))
    state.start()
    return state


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED])
@pytest.mark.parametrize("method", sorted(set(METHOD_SCOPES) - NOT_IDEMPOTENT_METHODS - {"StreamEvents"}))
def test_unavailable_and_aborted_are_retried_for_every_idempotent_method(code: grpc.StatusCode, method: str) -> None:
    state = attempts(method)
    retry = state.retry_after(refusal(code))
    assert retry is not None and not retry.from_retry_info and retry.attempt == 1
    assert 0 <= retry.delay_s <= state.policy.backoff_cap_s(1)


@pytest.mark.parametrize("method", sorted(NOT_IDEMPOTENT_METHODS))
def test_a_method_without_an_idempotency_key_is_retried_only_when_refused_before_applying(method: str) -> None:
    assert attempts(method).retry_after(refusal(grpc.StatusCode.UNAVAILABLE)) is None
    assert attempts(method).retry_after(refusal(grpc.StatusCode.ABORTED, 0.2)) is None
    limited = attempts(method).retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.5))
    assert limited is not None and limited.delay_s == 0.5


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.CANCELLED,
    ],
)
def test_other_refusals_are_never_retried(code: grpc.StatusCode) -> None:
    assert attempts().retry_after(refusal(code)) is None
    assert attempts().retry_after(refusal(code, 0.1)) is None  # not even when a RetryInfo came with it


def test_the_servers_retry_info_is_the_delay() -> None:
    retry = attempts().retry_after(refusal(grpc.StatusCode.ABORTED, 0.75))
    assert retry is not None and retry.from_retry_info and retry.delay_s == 0.75


def test_a_negative_retry_info_means_at_once() -> None:
    retry = attempts().retry_after(refusal(grpc.StatusCode.ABORTED, -3.0))
    assert retry is not None and retry.delay_s == 0.0


def test_a_rate_limit_is_retried_only_when_it_says_when() -> None:
    assert attempts().retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED)) is None  # e.g. a message too large
    retry = attempts().retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 2.0))
    assert retry is not None and retry.delay_s == 2.0


def test_a_delay_past_the_deadline_is_not_waited_for() -> None:
    state = attempts(timeout_s=5)
    assert state.retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 60)) is None
    assert state.retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 4.9)) is not None
    state.clock.now += 4.5  # type: ignore[attr-defined]
    assert state.retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.6)) is None
    assert state.start() == pytest.approx(0.5)  # an attempt gets what is left of the call's deadline


def test_a_delay_longer_than_the_policy_allows_is_not_waited_for() -> None:
    state = attempts(policy=RetryPolicy(max_retry_info_delay_s=1.0), timeout_s=600)
    assert state.retry_after(refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 1.5)) is None


def test_attempts_are_bounded() -> None:
    state = attempts(policy=RetryPolicy(max_attempts=3), timeout_s=600)
    seen = []
    while (retry := state.retry_after(refusal(grpc.StatusCode.UNAVAILABLE))) is not None:
        seen.append(retry.attempt)
        state.start()
    assert seen == [1, 2] and state.number == 3


def test_no_retry_means_one_attempt() -> None:
    assert attempts(policy=NO_RETRY).retry_after(refusal(grpc.StatusCode.UNAVAILABLE)) is None


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Attempts("GetBalance", RetryPolicy(), 0)
