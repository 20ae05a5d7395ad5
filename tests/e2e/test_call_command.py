"""`paygate call` (stack/call_command.py) against a real stack over TLS: a signed call from a shell, its answer as
JSON with the worker and request id, a refusal with its details decoded, and mistakes of the command itself."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support import Stack


@pytest.fixture(scope="module")
def key_file(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    key_id, secret = stack.create_key("shell")
    path = tmp_path_factory.mktemp("call") / "key.json"
    path.write_text(json.dumps({"key_id": key_id, "secret": secret}))
    path.chmod(0o600)
    return path


def call(stack: Stack, key_file: Path, method: str, request: str) -> tuple[int, str, str]:
    done = stack.cli("call", method, request, "--target", stack.listen, "--key-file", str(key_file))
    return done.returncode, done.stdout, done.stderr


def test_a_signed_top_up_from_the_shell_answers_json_with_worker_and_request_id(stack: Stack, key_file: Path) -> None:
    user = f"shell-{uuid.uuid4().hex[:8]}"
    request = {"order_id": f"o-{user}", "user_id": user, "amount_minor": 700, "currency": "CNY"}
    code, out, err = call(stack, key_file, "TopUp", json.dumps({**request, "method": "PAYMENT_METHOD_SANDBOX"}))
    assert code == 0, err
    answer = json.loads(out)
    assert answer["response"]["status"] == "PAYMENT_STATUS_SUCCEEDED" and answer["response"]["amount_minor"] == "700"
    assert answer["worker"] and answer["request_id"]
    code, out, err = call(
        stack, key_file, "/paygate.v1.PaymentGateway/GetBalance", json.dumps({"user_id": user, "currency": "CNY"})
    )
    assert code == 0, err
    assert json.loads(out)["response"]["available_minor"] == "700"


def test_a_refusal_prints_the_status_and_the_decoded_details(stack: Stack, key_file: Path) -> None:
    code, out, _ = call(stack, key_file, "GetBalance", '{"user_id": "shell-1", "currency": "cny"}')
    assert code == 1
    refusal = json.loads(out)
    assert refusal["code"] == "INVALID_ARGUMENT" and refusal["ErrorInfo"]["reason"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in refusal["BadRequest"]["field_violations"]] == ["currency"]


@pytest.mark.parametrize(
    ("method", "request_text", "says"),
    [
        ("NoSuchMethod", "{}", "no method 'NoSuchMethod'"),
        ("StreamEvents", "{}", "streams"),
        ("GetBalance", '{"user": "x"}', "user"),
        ("GetBalance", "{not json", "Failed to load JSON"),
        ("TopUp", '{"method": "PAYMENT_METHOD_NOPE"}', "PAYMENT_METHOD_NOPE"),
    ],
)
def test_mistakes_of_the_command_are_named_and_send_nothing(
    stack: Stack, key_file: Path, method: str, request_text: str, says: str
) -> None:
    code, out, err = call(stack, key_file, method, request_text)
    assert code == 2 and out == "" and says in err, err


def test_no_key_is_a_clear_error(stack: Stack) -> None:
    done = stack.cli("call", "GetBalance", "{}", "--target", stack.listen)
    assert done.returncode == 2 and "PAYGATE_KEY_ID" in done.stderr
