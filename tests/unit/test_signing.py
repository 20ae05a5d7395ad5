from __future__ import annotations

import hashlib
import hmac

import pytest

from paygate import signing
from paygate.v1 import payment_gateway_pb2 as pb


def test_string_to_sign_is_the_five_lines_of_the_scheme() -> None:
    body = b"\x0a\x03o-1"
    expected = (
        "PAYGATE-HMAC-SHA256\n"
        "/paygate.v1.PaymentGateway/TopUp\n"
        "1700000000\n"
        "abcdefghijklmnop\n" + hashlib.sha256(body).hexdigest()
    ).encode()
    assert (
        signing.string_to_sign("/paygate.v1.PaymentGateway/TopUp", "1700000000", "abcdefghijklmnop", body) == expected
    )


def test_signature_is_lowercase_hex_hmac_sha256_of_the_string_to_sign() -> None:
    args = ("/paygate.v1.PaymentGateway/GetBalance", "1700000000", "n" * 16, b"body")
    reference = hmac.new(b"sk_secret", signing.string_to_sign(*args), hashlib.sha256).hexdigest()
    assert signing.compute_signature("sk_secret", *args) == reference
    assert reference == reference.lower()


@pytest.mark.parametrize(
    "change",
    [
        {"method": "/paygate.v1.PaymentGateway/CreatePayment"},
        {"timestamp": "1700000001"},
        {"nonce": "m" * 16},
        {"body": b"body!"},
        {"secret": "sk_other"},
    ],
)
def test_any_change_breaks_the_signature(change: dict[str, object]) -> None:
    base = {
        "secret": "sk_secret",
        "method": "/paygate.v1.PaymentGateway/TopUp",
        "timestamp": "1700000000",
        "nonce": "n" * 16,
        "body": b"body",
    }
    signature = signing.compute_signature(*base.values())  # type: ignore[arg-type]
    assert signing.signature_matches(*base.values(), signature)  # type: ignore[arg-type]
    changed = {**base, **change}
    assert not signing.signature_matches(*changed.values(), signature)  # type: ignore[arg-type]


def test_signed_metadata_round_trips_through_the_parser() -> None:
    metadata = signing.signed_metadata("key_1", "sk", "/paygate.v1.PaymentGateway/TopUp", b"x", timestamp=42)
    headers = signing.parse_signed_headers(metadata)
    assert headers.key_id == "key_1"
    assert headers.timestamp == "42"
    assert signing.NONCE_PATTERN.match(headers.nonce)
    assert signing.signature_matches(
        "sk", "/paygate.v1.PaymentGateway/TopUp", "42", headers.nonce, b"x", headers.signature
    )


def test_nonces_are_unique_and_well_formed() -> None:
    nonces = {signing.new_nonce() for _ in range(1000)}
    assert len(nonces) == 1000
    assert all(signing.NONCE_PATTERN.match(n) for n in nonces)


def _valid() -> list[tuple[str, str]]:
    return signing.signed_metadata("key_1", "sk", "/p", b"", timestamp=1)


@pytest.mark.parametrize("header", signing.SIGNED_HEADERS)
def test_each_missing_header_is_named(header: str) -> None:
    metadata = [(k, v) for k, v in _valid() if k != header]
    with pytest.raises(signing.MalformedSignature) as error:
        signing.parse_signed_headers(metadata)
    assert error.value.reason == "missing"
    assert header in str(error.value)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (signing.NONCE_HEADER, "short"),
        (signing.NONCE_HEADER, "x" * 65),
        (signing.NONCE_HEADER, "has space in it!!"),
        (signing.TIMESTAMP_HEADER, "12.5"),
        (signing.TIMESTAMP_HEADER, "-5"),
        (signing.SIGNATURE_HEADER, "A" * 64),
        (signing.SIGNATURE_HEADER, "0" * 63),
        (signing.KEY_ID_HEADER, "key/1"),
    ],
)
def test_malformed_headers_are_rejected(header: str, value: str) -> None:
    metadata = [(k, value if k == header else v) for k, v in _valid()]
    with pytest.raises(signing.MalformedSignature) as error:
        signing.parse_signed_headers(metadata)
    assert error.value.reason == "malformed"
    assert header in str(error.value)


def test_a_repeated_header_is_rejected() -> None:
    metadata = [*_valid(), (signing.NONCE_HEADER, "z" * 20)]
    with pytest.raises(signing.MalformedSignature, match="more than once"):
        signing.parse_signed_headers(metadata)


def test_nonce_length_limits_are_inclusive() -> None:
    for nonce in ("a" * 16, "b" * 64, "A-z_09" * 3):
        metadata = signing.signed_metadata("k", "s", "/p", b"", nonce=nonce)
        assert signing.parse_signed_headers(metadata).nonce == nonce


def test_the_documented_test_vector() -> None:
    body = pb.GetBalanceRequest(user_id="learner-1", currency="CNY").SerializeToString()
    assert body.hex() == "0a096c6561726e65722d311203434e59"
    signature = signing.compute_signature(
        "sk_test_secret", "/paygate.v1.PaymentGateway/GetBalance", "1795312800", "n0nce-0123456789abcdef", body
    )
    assert signature == "55e9c71bc26ce29fe33622dc7a541a2e86475034e523443c84c7896b9458f2bc"
