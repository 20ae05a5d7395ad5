"""Card numbers and phone numbers never appear in clear anywhere a real stack keeps or shows data (docs/security.md,
"Card and personal data").

One full session through a real `paygate serve` with the channel simulator: cards tokenized (with spaces, with
dashes, plain), card payments that succeed, are declined and wait for 3-D Secure, refunds, reads, another owner
trying a token, bad inputs that carry card numbers in every place a caller could put one, and phone numbers in the
risk engine's RiskContext (allowed, held for review, denied by a blocklisted fingerprint, malformed), with the
stack running risk rules. Then everything is
scanned for every sensitive value in any formatting (digits alone, or with spaces or dashes between them):

- every line every process wrote (the supervisor's, workers', gateway's, edge's and simulator's stdout/stderr all
  land in serve.log) and every other file under the data directory, the SQLite database, its WAL and the
  simulator's store included, byte for byte;
- every row of every table of the database, column by column;
- every metric line of /metrics (names, labels and values);
- every key and value in the stack's Redis.

To add more sensitive data to the session, append the values to
SENSITIVE_VALUES and a call that sends them to SESSION_CALLS (or pass `extra_calls` to `run_session`).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from sqlalchemy import MetaData, create_engine, select

from paygate.client import PaygateClient
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.master_key import derive_key
from runtime.settings import Settings
from tests.e2e.channel_support import wait_for_status
from tests.support import Stack, start_stack
from workers.risk.engine import PHONE_KEY_PURPOSE, phone_fingerprint

SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"  # do_not_honor at the simulator
THREE_D_SECURE_CARD = "4000002500003155"  # requires_action: pending until the payer's step
MASTERCARD = "5555555555554444"
NOT_LUHN = "4242424242424241"  # refused, and must not be echoed either
PHONE = "+8613912345678"  # allowed, then held for review with a region mismatch
BLOCKED_PHONE = "+8613700001111"  # on the rules' blocklist, by its fingerprint
# Every value that must never appear in clear, as the digits that carry it.
SENSITIVE_VALUES: list[str] = [
    SUCCESS_CARD,
    DECLINED_CARD,
    THREE_D_SECURE_CARD,
    MASTERCARD,
    NOT_LUHN,
    PHONE.removeprefix("+"),
    BLOCKED_PHONE.removeprefix("+"),
]
MASTER_KEY = base64.urlsafe_b64encode(b"sensitive-data-scan-master-key!!").decode()  # test only: 32 bytes


def risk_rules() -> str:
    """A blocklist of one phone (by its fingerprint under the stack's master key) and a region rule that holds."""
    key = derive_key(Settings(master_key=MASTER_KEY), PHONE_KEY_PURPOSE)
    return f"""version = 1
[thresholds]
review_at = 0.5
deny_at = 0.9

[[rules]]
name = "blocked-phones"
kind = "blocklist"
phone_fingerprints = ["{phone_fingerprint(key, BLOCKED_PHONE)}"]
probability = 1

[[rules]]
name = "region"
kind = "region_mismatch"
regions = {{ US = ["USD"] }}
probability = 0.6
"""


# A run of digits, with single spaces or dashes between them: any formatting of a number inside any text.
_DIGIT_RUN = re.compile(rb"[0-9](?:[ -]?[0-9])*")

Call = Callable[[PaygateClient], None]


def spaced(number: str, separator: str = " ") -> str:
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def found_in(data: bytes, values: Sequence[str]) -> list[str]:
    """The sensitive values that occur in `data` in any formatting (separators between digits removed)."""
    runs = [run.group().replace(b" ", b"").replace(b"-", b"") for run in _DIGIT_RUN.finditer(data)]
    return sorted({value for value in values for run in runs if value.encode() in run})


# -- the session ------------------------------------------------------------------------------------------------


def _pay(client: PaygateClient, token: str, amount_minor: int = 9900) -> pb.Payment:
    return client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("sens"), user_id="learner-s", amount_minor=amount_minor, currency="CNY",
            method=pb.PAYMENT_METHOD_CARD, payee_id="creator-s", description="Algorithms", card_token=token,
        )
    )  # fmt: skip


def _tokenize(client: PaygateClient, number: str, exp_year: int = 2031) -> pb.CardToken:
    return client.tokenize_card(pb.TokenizeCardRequest(card_number=number, exp_month=12, exp_year=exp_year))


def card_payments(client: PaygateClient) -> None:
    """Tokenize (three formattings of one card give one token), pay, read, refund; a decline; 3-D Secure."""
    first = _tokenize(client, spaced(SUCCESS_CARD))
    assert first.token.startswith("pgcard_") and first.masked == "**** 4242" and first.brand == "visa"
    assert _tokenize(client, spaced(SUCCESS_CARD, "-")).token == _tokenize(client, SUCCESS_CARD).token == first.token
    paid = _pay(client, first.token)
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED and paid.card_masked == "**** 4242"
    again = _pay(client, first.token, 1900)  # a vault token is reusable, unlike a processor's
    assert again.status == pb.PAYMENT_STATUS_SUCCEEDED
    read = client.get_payment(pb.GetPaymentRequest(payment_id=paid.payment_id))
    assert read.card_masked == "**** 4242" and read.channel_trade_no == paid.channel_trade_no
    refund = pb.RefundPaymentRequest(payment_id=paid.payment_id, refund_id=uid("r"), amount_minor=900, reason="x")
    assert client.refund_payment(refund).status in (pb.REFUND_STATUS_PENDING, pb.REFUND_STATUS_SUCCEEDED)

    declined = _pay(client, _tokenize(client, DECLINED_CARD).token)
    assert declined.status == pb.PAYMENT_STATUS_FAILED and declined.failure_reason
    pending = _pay(client, _tokenize(client, THREE_D_SECURE_CARD).token)
    assert pending.status == pb.PAYMENT_STATUS_PENDING and pending.card_masked == "**** 3155"
    mastercard = _tokenize(client, MASTERCARD)
    assert (mastercard.masked, mastercard.brand) == ("**** 4444", "mastercard")
    wait_for_status(client, paid.payment_id, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED)


def bad_inputs(client: PaygateClient) -> None:
    """Card numbers where they do not belong: refused, and never echoed in the refusal."""
    cases: list[Callable[[], Any]] = [
        lambda: _tokenize(client, NOT_LUHN),
        lambda: _tokenize(client, spaced(SUCCESS_CARD), exp_year=2001),  # expired
        lambda: _tokenize(client, SUCCESS_CARD + "0000"),  # 20 digits
        lambda: _pay(client, SUCCESS_CARD),  # the number where the token goes
        lambda: _pay(client, spaced(MASTERCARD, "-")),
        lambda: client.create_payment(
            pb.CreatePaymentRequest(
                order_id=uid("sens"),
                user_id="learner-s",
                amount_minor=100,
                currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET,
                description=f"card {spaced(SUCCESS_CARD)} thanks",
            )
        ),
        lambda: client.create_payment(
            pb.CreatePaymentRequest(
                order_id=spaced(SUCCESS_CARD),
                user_id=f"{MASTERCARD} ",
                amount_minor=100,
                currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET,
            )
        ),
        lambda: client.refund_payment(
            pb.RefundPaymentRequest(payment_id="pay_x", refund_id=uid("r"), amount_minor=1, reason=spaced(MASTERCARD))
        ),
    ]
    for case in cases:
        error = refused(case)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert found_in((error.details() or "").encode(), SENSITIVE_VALUES) == [], error.details()


def another_owner(stack: Stack) -> Call:
    def call(client: PaygateClient) -> None:
        token = _tokenize(client, SUCCESS_CARD).token
        key_id, secret = stack.create_key(uid("other"))
        with stack.client(key_id, secret) as other:
            error = refused(lambda: _pay(other, token))
        assert error.code() == grpc.StatusCode.NOT_FOUND

    return call


def phone_numbers(client: PaygateClient) -> None:
    """Phone numbers in RiskContext: an allowed top-up, a card payment held for review, a denial by a blocklisted
    fingerprint (the refusal names the rule, never the number) and a malformed number (not echoed)."""
    topped = client.top_up(
        pb.TopUpRequest(
            order_id=uid("tp"), user_id="learner-p", amount_minor=5_000, currency="CNY",
            method=pb.PAYMENT_METHOD_SANDBOX, risk=pb.RiskContext(phone_number=PHONE, region="CN"),
        )
    )  # fmt: skip
    assert topped.status == pb.PAYMENT_STATUS_SUCCEEDED
    token = _tokenize(client, SUCCESS_CARD).token
    held = client.create_payment(
        pb.CreatePaymentRequest(
            order_id=uid("held"), user_id="learner-p", amount_minor=3_000, currency="CNY",
            method=pb.PAYMENT_METHOD_CARD, card_token=token, risk=pb.RiskContext(phone_number=PHONE, region="US"),
        )
    )  # fmt: skip
    assert held.status == pb.PAYMENT_STATUS_IN_REVIEW and list(held.risk.reasons) == ["region"]
    denied = refused(
        lambda: client.create_payment(
            pb.CreatePaymentRequest(
                order_id=uid("deny"), user_id="learner-p", amount_minor=1_000, currency="CNY",
                method=pb.PAYMENT_METHOD_WALLET, risk=pb.RiskContext(phone_number=BLOCKED_PHONE),
            )
        )
    )  # fmt: skip
    assert denied.code() == grpc.StatusCode.FAILED_PRECONDITION and "blocked-phones" in (denied.details() or "")
    malformed = refused(
        lambda: client.top_up(
            pb.TopUpRequest(
                order_id=uid("bad"), user_id="learner-p", amount_minor=100, currency="CNY",
                method=pb.PAYMENT_METHOD_SANDBOX, risk=pb.RiskContext(phone_number=spaced(PHONE.removeprefix("+"))),
            )
        )
    )  # fmt: skip
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    for error in (denied, malformed):
        assert found_in((error.details() or "").encode(), SENSITIVE_VALUES) == [], error.details()


SESSION_CALLS: list[Call] = [card_payments, bad_inputs, phone_numbers]


def run_session(client: PaygateClient, extra_calls: Sequence[Call] = ()) -> None:
    for call in [*SESSION_CALLS, *extra_calls]:
        call(client)


# -- what is scanned ------------------------------------------------------------------------------------------------


def every_row(database_url: str) -> Iterator[tuple[str, bytes]]:
    engine = create_engine(database_url)
    try:
        reflected = MetaData()
        reflected.reflect(engine)
        with engine.connect() as connection:
            for table in reflected.sorted_tables:
                for row in connection.execute(select(table)):
                    for column, value in zip(table.columns, row, strict=True):
                        data = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                        yield f"{table.name}.{column.name}", data
    finally:
        engine.dispose()


def every_redis_value(url: str) -> Iterator[tuple[str, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key).decode()
            if kind == "string":
                values = [client.get(key) or b""]
            elif kind == "hash":
                values = [k + b"=" + v for k, v in client.hgetall(key).items()]
            elif kind == "list":
                values = list(client.lrange(key, 0, -1))
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
            else:  # streams and anything newer: the key's own dump
                values = [client.dump(key) or b""]
            yield key.decode(errors="replace"), key + b"\n" + b"\n".join(values)
    finally:
        client.close()


def every_file(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            if path.name == "merchant.json":
                # The simulator publishes its test cards there (before any call): everything else is scanned.
                config = json.loads(data)
                assert set(config["card"].pop("test_cards")) >= {SUCCESS_CARD, DECLINED_CARD, THREE_D_SECURE_CARD}
                data = json.dumps(config).encode()
            yield str(path.relative_to(root)), data


@pytest.fixture(scope="module")
def session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = Path(tmp_path_factory.mktemp("sensitive"))
    rules = data_dir.parent / f"{data_dir.name}-rules.toml"
    rules.write_text(risk_rules())
    env = {"PAYGATE_MASTER_KEY": MASTER_KEY, "PAYGATE_RISK_RULES": str(rules)}
    started = start_stack(data_dir, workers=2, channels=True, extra_env=env)
    yield started
    started.stop()


def test_no_card_or_phone_number_is_kept_logged_or_shown_anywhere(session_stack: Stack) -> None:
    stack = session_stack
    key_id, secret = stack.create_key("sensitive")
    with stack.client(key_id, secret) as client:
        run_session(client, extra_calls=[another_owner(stack)])

    leaks: dict[str, list[str]] = {}
    metrics = stack.metrics_text()
    assert "TokenizeCard" in metrics  # the scrape holds the session's calls
    leaks.update({"/metrics": found} if (found := found_in(metrics.encode(), SENSITIVE_VALUES)) else {})
    redis_url = (stack.data_dir / "run" / "redis.url").read_text().strip()
    redis_values = list(every_redis_value(redis_url))
    assert redis_values, "the stack's Redis holds the session's nonces and locks"
    for key, data in redis_values:
        if found := found_in(data, SENSITIVE_VALUES):
            leaks[f"redis {key}"] = found

    database_url = f"sqlite:///{(stack.data_dir / 'paygate.sqlite3').resolve()}"
    rows = list(every_row(database_url))
    assert any(name == "card_tokens.last4" and data == b"4242" for name, data in rows)
    for name, data in rows:
        if found := found_in(data, SENSITIVE_VALUES):
            leaks.setdefault(f"row {name}", []).extend(found)

    assert stack.stop() == 0  # every process flushed and closed its logs
    files = list(every_file(stack.data_dir))
    assert any(name == "serve.log" and b"worker serving" in data for name, data in files)
    for name, data in files:
        if found := found_in(data, SENSITIVE_VALUES):
            leaks[f"file {name}"] = found
    assert leaks == {}


def test_the_scan_finds_numbers_in_any_formatting() -> None:
    """The scanner itself: a test that can fail must be able to see what it looks for."""
    for text in [SUCCESS_CARD, spaced(SUCCESS_CARD), spaced(SUCCESS_CARD, "-"), f'{{"n":"x{SUCCESS_CARD}1"}}']:
        assert found_in(text.encode(), SENSITIVE_VALUES) == [SUCCESS_CARD]
    assert found_in(b"**** 4242 and 4242 4242 4242", SENSITIVE_VALUES) == []
