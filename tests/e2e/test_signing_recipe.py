"""The shell recipe of docs/signing.md ("With buf curl and openssl"), run exactly as written there, against a real
stack over TLS: the block is read from the document and given to bash, so the document and this test cannot drift."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import REPO_ROOT, Stack, buf_binary, wait_until

SECTION = "## With buf curl and openssl"


def recipe() -> str:
    """The first bash block of the section (the one the section says the test runs)."""
    text = (REPO_ROOT / "docs" / "signing.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert block is not None, f"no bash block under {SECTION!r} in docs/signing.md"
    return block.group(1)


def run_recipe(stack: Stack, key_id: str, secret: str, directory: Path) -> subprocess.CompletedProcess[str]:
    assert stack.ca_file is not None  # the recipe is over TLS
    environment = {
        "PATH": f"{Path(buf_binary()).parent}:{os.environ['PATH']}",
        "HOME": str(directory),
        "PAYGATE_KEY_ID": key_id,
        "PAYGATE_KEY_SECRET": secret,
        "GATEWAY": stack.listen,
        "CA": stack.ca_file,
        "PROTOS": str(REPO_ROOT / "protos"),
    }
    script = directory / "recipe.sh"
    script.write_text(recipe())
    return subprocess.run(
        ["bash", "-eu", "-o", "pipefail", str(script)],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_documented_recipe_makes_a_signed_call(stack: Stack, tmp_path: Path) -> None:
    key_id, secret = stack.create_key("shell-recipe", scopes="balances:read,payments:write")
    with stack.client(key_id, secret) as client:
        client.top_up(
            pb.TopUpRequest(
                order_id="recipe-top-up",
                user_id="learner-1",
                amount_minor=1234,
                currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX,
            )
        )
    done = run_recipe(stack, key_id, secret, tmp_path)
    assert done.returncode == 0, done.stderr
    balance = json.loads(done.stdout)
    assert balance["currency"] == "CNY" and balance["availableMinor"] == "1234"

    def recipe_call_logged() -> bool:
        return any(
            f'"key_id": "{key_id}"' in line and "GetBalance" in line and '"code": "OK"' in line
            for line in stack.log().splitlines()
        )

    wait_until(recipe_call_logged, attempts=200, what="the gateway's access line of the recipe's call")
    # What the recipe hashed is what was sent: the same bytes as the Python encoder's for this message.
    sent = (tmp_path / "request.binpb").read_bytes()
    assert sent == pb.GetBalanceRequest(user_id="learner-1", currency="CNY").SerializeToString()


def test_the_recipe_with_a_wrong_secret_is_refused(stack: Stack, tmp_path: Path) -> None:
    key_id, _ = stack.create_key("shell-recipe-wrong", scopes="balances:read")
    done = run_recipe(stack, key_id, "sk_not_the_secret", tmp_path)
    assert done.returncode != 0
    assert "unauthenticated" in done.stderr.lower() and "signature does not match" in done.stderr


@pytest.mark.parametrize("tool", ["buf convert", "openssl dgst -sha256 -hmac", "buf curl --protocol grpc"])
def test_the_recipe_uses_only_standard_tools(tool: str) -> None:
    assert tool in recipe()
    # No command of ours, and no Python: a caller in another language has neither.
    code = re.sub(r"(?:^|\s)# .*$", "", recipe(), flags=re.MULTILINE)  # comments; `file#format=json` stays
    commands = re.findall(r"(?:^|\$\(|[|;&]\s*)([a-z0-9_.-]+)(?=\s)", code, re.MULTILINE)
    assert set(commands) <= {"buf", "openssl", "printf", "date", "cut"}, commands
