"""The gateway's access log against a real stack over TLS (gateway/access_log.py): one JSON line per call with its
method, status, latency, key id, owner, worker, request id and peer; a refused signature is a warning naming the
key id and the rule, and nothing of the signature or the request body reaches the log."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, wait_until

CARD_NUMBER = "4242424242424242"


def log_entries(stack: Stack, logger: str, request_id: str | None = None) -> list[dict[str, Any]]:
    entries = []
    for line in stack.log().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == logger and (request_id is None or entry.get("request_id") == request_id):
            entries.append(entry)
    return entries


def the_entry(stack: Stack, logger: str, request_id: str) -> dict[str, Any]:
    found = wait_until(lambda: log_entries(stack, logger, request_id), attempts=200, what=f"{logger} line")
    assert len(found) == 1, found  # one line per call, not one per attempt or per phase
    return found[0]


def test_a_signed_call_writes_one_access_line_with_who_what_and_how(stack: Stack, credentials: tuple[str, str]) -> None:
    key_id, secret = credentials
    request_id = f"access-{uuid.uuid4().hex}"
    with stack.client(key_id, secret) as client:
        answer = client.call(
            "GetBalance", pb.GetBalanceRequest(user_id="u-access", currency="CNY"), pb.Balance, request_id=request_id
        )
    entry = the_entry(stack, "paygate.access", request_id)
    assert entry["level"] == "info" and entry["process"] == "gateway" and entry["message"] == "call"
    assert entry["method"] == "/paygate.v1.PaymentGateway/GetBalance" and entry["code"] == "OK"
    assert (entry["key_id"], entry["owner"], entry["worker"]) == (key_id, "e2e-tests", answer.worker)
    assert isinstance(entry["latency_ms"], float) and entry["latency_ms"] > 0
    assert entry["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))


def test_a_refusal_by_the_worker_is_logged_with_its_status_and_worker(
    stack: Stack, credentials: tuple[str, str]
) -> None:
    key_id, secret = credentials
    request_id = f"access-{uuid.uuid4().hex}"
    bad = pb.TokenizeCardRequest(card_number=CARD_NUMBER + "9", exp_month=13, exp_year=2020)  # refused, card inside
    with stack.client(key_id, secret) as client, pytest.raises(grpc.RpcError) as refused:
        client.call("TokenizeCard", bad, pb.CardToken, request_id=request_id)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    entry = the_entry(stack, "paygate.access", request_id)
    assert entry["code"] == "INVALID_ARGUMENT" and entry["key_id"] == key_id and entry["worker"]
    assert CARD_NUMBER not in stack.log()


def test_a_bad_signature_is_one_warning_with_the_key_id_and_the_rule_and_no_signature(
    stack: Stack, credentials: tuple[str, str]
) -> None:
    key_id, _ = credentials
    request_id = f"access-{uuid.uuid4().hex}"
    body = pb.GetBalanceRequest(user_id="u-access", currency="CNY").SerializeToString()
    wrong_secret = f"sk_wrong_{uuid.uuid4().hex}"
    metadata = signing.signed_metadata(key_id, wrong_secret, method_path("GetBalance"), body)
    signature = dict(metadata)[signing.SIGNATURE_HEADER]
    with stack.channel() as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(method_path("GetBalance"))(
            body, metadata=[*metadata, (signing.REQUEST_ID_HEADER, request_id)], timeout=30
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    warning = the_entry(stack, "paygate.auth", request_id)
    assert warning["level"] == "warning"
    assert (warning["key_id"], warning["rule"], warning["reason"]) == (key_id, "bad_signature", "UNAUTHENTICATED")
    access = the_entry(stack, "paygate.access", request_id)
    assert (access["code"], access["key_id"], access["owner"], access["worker"]) == (
        "UNAUTHENTICATED",
        key_id,
        "",
        "",
    )
    log = stack.log()
    assert signature not in log and wrong_secret not in log


def test_a_malformed_key_id_is_not_written_to_the_log(stack: Stack) -> None:
    request_id = f"access-{uuid.uuid4().hex}"
    claimed = 'not a key id", "level": "forged'  # would forge a field if it were written as it came
    metadata = [
        (signing.KEY_ID_HEADER, claimed),
        (signing.TIMESTAMP_HEADER, "1"),
        (signing.NONCE_HEADER, "n" * 20),
        (signing.SIGNATURE_HEADER, "0" * 64),
        (signing.REQUEST_ID_HEADER, request_id),
    ]
    with stack.channel() as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(method_path("GetBalance"))(b"", metadata=metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    warning = the_entry(stack, "paygate.auth", request_id)
    assert (warning["rule"], warning["key_id"]) == ("malformed", "")
    assert the_entry(stack, "paygate.access", request_id)["key_id"] == ""
    assert "forged" not in stack.log()
