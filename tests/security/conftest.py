"""The hostile-input suite's shared stack: one real `paygate serve` (SQLite + private Redis), two owners' keys.

Tests here act as a stranger with a client written from the proto and docs/signing.md would: raw bytes, signed
correctly, through the real gateway. Every refusal is checked for its status, the quality of its message, and
that it wrote no row (row counts of every table before and after).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack

# What a caller can be told (docs/errors.md). INTERNAL and UNKNOWN are never among them for caller input.
DOCUMENTED_FOR_CALLER_INPUT = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
RESPONSE_TYPES: dict[str, type[Message]] = {
    "TopUp": pb.Payment,
    "CreatePayment": pb.Payment,
    "GetPayment": pb.Payment,
    "GetBalance": pb.Balance,
    "RefundPayment": pb.Refund,
    "Transfer": pb.Transfer,
    "ListTransactions": pb.ListTransactionsResponse,
    "QuotePrice": pb.PriceQuote,
    "CreateWebhookEndpoint": pb.WebhookEndpoint,
    "ListWebhookEndpoints": pb.ListWebhookEndpointsResponse,
    "DeleteWebhookEndpoint": pb.WebhookEndpoint,
    "RotateWebhookEndpointSecret": pb.WebhookEndpoint,
    "TokenizeCard": pb.CardToken,
}
# Words that would mean internals leaked into a message.
INTERNALS = ("Traceback", "sqlalchemy", "sqlite3", "psycopg", "pymysql", "redis.", "Exception", "Error(", 'File "')
MAX_MESSAGE_CHARS = 2_000
# Caller input quoted in a message (workers/codec/grammar.py `quote`: Python's escaped repr, single or double quotes).
QUOTED_INPUT = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str
    response: Message | None = None
    violations: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    retry_delay_ms: int | None = None
    raw_details: bytes = b""

    def assert_refusal_is_well_formed(self) -> None:
        """A refusal says which rule, never internals, in a message of bounded size."""
        assert self.code != grpc.StatusCode.OK
        assert self.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), self.message
        assert self.message, "a refusal must say why"
        assert len(self.message) <= MAX_MESSAGE_CHARS, len(self.message)
        own_words = QUOTED_INPUT.sub("", self.message)  # what the caller sent may contain anything
        assert not any(word in own_words for word in INTERNALS), self.message
        assert self.reason, "every status carries a google.rpc.ErrorInfo reason"
        if self.code == grpc.StatusCode.INVALID_ARGUMENT:
            assert self.violations, "INVALID_ARGUMENT carries a google.rpc.BadRequest naming the fields"


def decode_outcome(method: str, call_result: bytes | None, error: grpc.RpcError | None) -> Outcome:
    if error is None:
        assert call_result is not None
        return Outcome(grpc.StatusCode.OK, "", RESPONSE_TYPES[method].FromString(call_result))
    outcome = Outcome(error.code(), error.details() or "")
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return outcome
    outcome.raw_details = status.SerializeToString()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            outcome.reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            outcome.violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            outcome.retry_delay_ms = retry.retry_delay.ToMilliseconds()
    return outcome


@dataclass
class HostileClient:
    """A stranger's client: serialize, sign the exact bytes, send them on a raw channel."""

    stack: Stack
    key_id: str
    secret: str
    channel: grpc.Channel

    def send(self, method: str, request: Message | bytes, *, timeout_s: float = 20) -> Outcome:
        body = request if isinstance(request, bytes) else request.SerializeToString()
        path = method_path(method)
        metadata = signing.signed_metadata(self.key_id, self.secret, path, body)
        try:
            answer = self.channel.unary_unary(path)(body, metadata=metadata, timeout=timeout_s)
        except grpc.RpcError as error:
            return decode_outcome(method, None, error)
        return decode_outcome(method, answer, None)

    def ok(self, method: str, request: Message) -> Message:
        outcome = self.send(method, request)
        assert outcome.code == grpc.StatusCode.OK, (outcome.code, outcome.message)
        assert outcome.response is not None
        return outcome.response


def row_counts(stack: Stack) -> dict[str, int]:
    """Rows of every table of the stack's SQLite ledger, read-only (a second reader never blocks the writers)."""
    path = stack.data_dir / "paygate.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables}
    finally:
        connection.close()


HOSTILE_RISK_RULES = """version = 1
[thresholds]
review_at = 0.5
deny_at = 0.9

[[rules]]
name = "fz-blocked"
kind = "blocklist"
device_ids = ["fz-blocked-device"]
ips = ["192.0.2.0/24", "2001:db8::/32"]
probability = 1

[[rules]]
name = "fz-region"
kind = "region_mismatch"
regions = { US = ["USD"], JP = ["JPY"] }
probability = 0.6
"""


@pytest.fixture(scope="session")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = Path(tmp_path_factory.mktemp("hostile"))
    # Risk rules that only the fuzz's own risk contexts trigger (docs/risk.md): a denial must write nothing, a
    # review must be answered well. Pure rules only, so wallet purchases keep their group-committed path.
    (data_dir / "risk.toml").write_text(HOSTILE_RISK_RULES)
    running = start_stack(data_dir, workers=2, extra_env={"PAYGATE_RISK_RULES": str(data_dir / "risk.toml")})
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


def _caller(stack: Stack, name: str) -> Iterator[HostileClient]:
    key_id, secret = stack.create_key(name)
    channel = stack.channel()
    yield HostileClient(stack, key_id, secret, channel)
    channel.close()


@pytest.fixture(scope="session")
def owner_a(hostile_stack: Stack) -> Iterator[HostileClient]:
    yield from _caller(hostile_stack, "owner-a")


@pytest.fixture(scope="session")
def owner_b(hostile_stack: Stack) -> Iterator[HostileClient]:
    yield from _caller(hostile_stack, "owner-b")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many hostile examples ran (docs/security.md quotes these figures)."""
    from tests.security import test_fuzz  # noqa: PLC0415 - only when the suite ran

    if test_fuzz.EXAMPLES_RUN:
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(test_fuzz.EXAMPLES_RUN.items()))
        terminalreporter.write_line(f"hostile fuzz examples run: {sum(test_fuzz.EXAMPLES_RUN.values())} ({counts})")
        statuses = ", ".join(f"{code}: {n}" for code, n in test_fuzz.STATUSES_SEEN.most_common())
        terminalreporter.write_line(f"hostile fuzz statuses: {statuses}")
