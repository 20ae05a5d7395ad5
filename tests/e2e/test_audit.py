"""The audit trail through a real stack (docs/audit.md): a refund asked for through the API is kept with the key
that asked, what and when, once; a refused refund leaves no entry; key management by the CLI is kept with the
operator; and the trail verifies."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime import audit
from tests.support import Stack


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def audited(stack: Stack, action: str, subject: str) -> list[dict[str, Any]]:
    listed = stack.cli("audit", "list", "--action", action, "--limit", "10000", "--json")
    assert listed.returncode == 0, listed.stderr
    return [e for e in json.loads(listed.stdout)["entries"] if e["subject"] == subject]


def moment(text: str) -> datetime:
    return datetime.strptime(text, audit.TIME_FORMAT).replace(tzinfo=UTC)


def test_a_refund_through_the_api_is_audited_once_and_a_refused_one_not_at_all(
    stack: Stack, client: PaygateClient, credentials: tuple[str, str]
) -> None:
    key_id, _ = credentials
    topped = client.top_up(
        pb.TopUpRequest(
            order_id=uid("t"), user_id=uid("u"), amount_minor=20_00, currency="CNY", method=pb.PAYMENT_METHOD_SANDBOX
        )
    )
    refund = pb.RefundPaymentRequest(
        payment_id=topped.payment_id, refund_id=uid("r"), amount_minor=5_00, reason="customer changed their mind"
    )
    done = client.refund_payment(refund)
    assert client.refund_payment(refund).refund_id == done.refund_id  # the same refund again: no second entry

    (entry,) = audited(stack, "refund.create", refund.refund_id)
    assert entry["actor"] == f"key:{key_id}"
    assert entry["details"] == {
        "owner": "e2e-tests",
        "payment_id": topped.payment_id,
        "amount_minor": 5_00,
        "currency": "CNY",
        "reason": "customer changed their mind",
        "entry_id": entry["details"]["entry_id"],
        "status": "SUCCEEDED",
    }
    assert entry["details"]["entry_id"].startswith("je")
    # When: the stack's time of the refund (the entry is written with it), never before the payment it refunds.
    assert moment(entry["recorded_at"]) >= topped.create_time.ToDatetime(tzinfo=UTC)

    too_much = pb.RefundPaymentRequest(payment_id=topped.payment_id, refund_id=uid("r"), amount_minor=50_00)
    with pytest.raises(grpc.RpcError) as refused:
        client.refund_payment(too_much)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert audited(stack, "refund.create", too_much.refund_id) == []

    verified = stack.cli("audit", "verify")
    assert verified.returncode == 0 and "audit trail intact" in verified.stdout, verified.stdout


def test_keys_made_and_revoked_by_the_cli_are_audited_with_the_operator(stack: Stack) -> None:
    key_id, secret = stack.create_key(uid("svc"), "payments:read")
    assert stack.cli("keys", "revoke", key_id).returncode == 0
    (made,) = audited(stack, "key.create", key_id)
    (revoked,) = audited(stack, "key.revoke", key_id)
    assert made["actor"] == revoked["actor"] == audit.cli_actor()
    assert made["details"]["scopes"] == "payments:read" and secret not in json.dumps(made)
    assert made["seq"] < revoked["seq"]
    assert stack.cli("keys", "revoke", key_id).returncode == 1  # already revoked: refused, not audited again
    assert len(audited(stack, "key.revoke", key_id)) == 1


def test_webhook_endpoint_changes_are_audited_from_the_cli_and_the_api(
    stack: Stack, client: PaygateClient, credentials: tuple[str, str]
) -> None:
    owner = uid("own")
    added = stack.cli("webhooks", "add", "--owner", owner, "--url", "http://127.0.0.1:9/hook", "--json")
    assert added.returncode == 0, added.stderr
    made = json.loads(added.stdout)
    endpoint_id = made["endpoint_id"]
    assert stack.cli("webhooks", "rotate-secret", "--owner", owner, endpoint_id, "--json").returncode == 0
    assert stack.cli("webhooks", "remove", "--owner", owner, endpoint_id, "--json").returncode == 0
    operator = audit.cli_actor()
    for action in ("webhook.add", "webhook.rotate_secret", "webhook.remove"):
        (entry,) = audited(stack, action, endpoint_id)
        assert entry["actor"] == operator and entry["details"]["owner"] == owner
        assert made["secret"] not in json.dumps(entry)

    key_id, _ = credentials
    through_api = client.create_webhook_endpoint(pb.CreateWebhookEndpointRequest(url="http://127.0.0.1:9/api-hook"))
    (entry,) = audited(stack, "webhook.add", through_api.endpoint_id)
    assert entry["actor"] == f"key:{key_id}" and entry["details"]["url"] == "http://127.0.0.1:9/api-hook"
    client.delete_webhook_endpoint(pb.DeleteWebhookEndpointRequest(endpoint_id=through_api.endpoint_id))
    assert [e["actor"] for e in audited(stack, "webhook.remove", through_api.endpoint_id)] == [f"key:{key_id}"]
