"""`paygate serve --plaintext` (dev only) keeps working: a representative subset of the e2e suite on a plaintext
stack — the signature rules, payments, a refusal and streaming. Every other e2e and security test runs over TLS,
the default of the stack fixtures (docs/decisions.md #64)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from paygate import signing
from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb
from tests.support import Stack, start_stack

BALANCE_PATH = method_path("GetBalance")


@pytest.fixture(scope="module")
def plaintext_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(Path(tmp_path_factory.mktemp("plaintext")), workers=2, tls=False)
    yield running
    code = running.stop()
    assert code == 0, f"paygate serve did not shut down cleanly ({code}):\n{running.log()[-4000:]}"


@pytest.fixture(scope="module")
def key(plaintext_stack: Stack) -> tuple[str, str]:
    return plaintext_stack.create_key("plaintext-tests")


def test_serve_says_loudly_that_it_is_plaintext(plaintext_stack: Stack) -> None:
    log = plaintext_stack.log()
    assert "PLAINTEXT: --plaintext serves callers and workers without TLS" in log
    assert '"tls": false' in log and '"workers_mtls": false' in log
    assert not (plaintext_stack.data_dir / "tls").exists()  # no certificates were made


def test_signature_rules_apply(plaintext_stack: Stack, key: tuple[str, str]) -> None:
    key_id, secret = key
    body = pb.GetBalanceRequest(user_id="plain-learner", currency="CNY").SerializeToString()
    signed = signing.signed_metadata(key_id, secret, BALANCE_PATH, body)
    tampered = pb.GetBalanceRequest(user_id="plain-learner-2", currency="CNY").SerializeToString()
    with plaintext_stack.channel() as channel:
        call = channel.unary_unary(BALANCE_PATH)
        assert pb.Balance.FromString(call(body, metadata=signed, timeout=10)).user_id == "plain-learner"
        with pytest.raises(grpc.RpcError) as unsigned:
            call(body, timeout=10)
        with pytest.raises(grpc.RpcError) as forged:
            call(tampered, metadata=signed, timeout=10)
    assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_payments_refusals_and_streaming(plaintext_stack: Stack, key: tuple[str, str]) -> None:
    run = uuid.uuid4().hex[:8]
    with plaintext_stack.client(*key) as client:
        top_up = client.top_up(
            pb.TopUpRequest(
                order_id=f"plain-top-up-{run}",
                user_id=f"plain-{run}",
                amount_minor=10_000,
                currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX,
            )
        )
        purchase = client.create_payment(
            pb.CreatePaymentRequest(
                order_id=f"plain-buy-{run}",
                user_id=f"plain-{run}",
                amount_minor=4_990,
                currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET,
                payee_id="creator-plain",
                description="Plaintext, part I",
            )
        )
        assert (top_up.status, purchase.status) == (pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_SUCCEEDED)
        with pytest.raises(grpc.RpcError) as refused:
            client.create_payment(
                pb.CreatePaymentRequest(
                    order_id=f"plain-too-much-{run}",
                    user_id=f"plain-{run}",
                    amount_minor=100_000,
                    currency="CNY",
                    method=pb.PAYMENT_METHOD_WALLET,
                    payee_id="creator-plain",
                    description="Plaintext, part II",
                )
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        seen = []
        for event in client.stream_events(reconnect=False):
            seen.append((event.payment.order_id, event.type))
            if len(seen) == 4:
                break
    assert (f"plain-buy-{run}", pb.EVENT_TYPE_PAYMENT_SUCCEEDED) in seen
