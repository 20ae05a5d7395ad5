"""PAYGATE_REDIS_URL: the Sentinel and TLS forms parse, and every malformed URL is a configuration error that
names the variable and never repeats the URL (it may carry a password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ConfigurationError
from runtime.redis_url import parse_redis_url
from runtime.settings import Settings


def test_sentinel_url_names_sentinels_service_db_and_both_passwords() -> None:
    target = parse_redis_url(
        "redis+sentinel://:node%40pass@10.0.0.5:26379,[::1]:26380,sentinel-c:26381/payments/3?sentinel_password=s3cret"
    )
    assert target.sentinels == (("10.0.0.5", 26379), ("::1", 26380), ("sentinel-c", 26381))
    assert (target.service, target.db, target.password, target.username) == ("payments", 3, "node@pass", None)
    assert target.sentinel_password == "s3cret"
    assert target.uses_sentinel and not target.tls
    assert "node@pass" not in repr(target) and "s3cret" not in repr(target)


def test_tls_options_are_kept_for_rediss_and_sentinel_over_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    plain = parse_redis_url(f"rediss://cache.internal:6380/1?ssl_ca_certs={ca}&ssl_check_hostname=false")
    assert plain.tls and not plain.uses_sentinel
    assert plain.tls_options == {"ssl_ca_certs": str(ca), "ssl_check_hostname": False}
    over_tls = parse_redis_url(f"rediss+sentinel://h:26379/mymaster?db=2&ssl_ca_certs={ca}")
    assert over_tls.tls and over_tls.db == 2 and over_tls.tls_options == {"ssl_ca_certs": str(ca)}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:6379", "must start with one of"),
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h:26379/bad service", "service name"),
        ("redis+sentinel://h/mymaster", "host:port"),
        ("redis+sentinel://h:0/mymaster", "host:port"),
        ("redis+sentinel://h:26379,/mymaster", "host:port"),
        ("redis+sentinel://h:26379/mymaster/16", "0-15"),
        ("redis+sentinel://h:26379/mymaster/1?db=1", "not both"),
        ("redis+sentinel://h:26379/mymaster?sentinel_pasword=x", "unknown option 'sentinel_pasword'"),
        ("redis://h:6379/0?ssl_ca_certs=/etc/ssl/certs/ca-certificates.crt", "need a TLS scheme"),
        ("rediss://h:6379?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs names a file"),
        ("rediss://h:6379?ssl_certfile=/etc/hostname", "together"),
        ("rediss://h:6379?ssl_check_hostname=maybe", "true or false"),
        ("redis://h:6379?sentinel_password=x", "unknown option"),
        ("redis://h:6379?socket_timeout=1", "unknown option"),
        ("redis://h:99999/0", "malformed host or port"),
        ("redis://h:6379/abc", "0-15"),
        ("redis://:pw@/0", "needs a host"),
        ("unix://", "must start with one of"),
        ("redis://h:6379?db=1&db=2", "twice"),
    ],
)
def test_malformed_urls_are_configuration_errors_naming_the_variable(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_redis_url(url)
    assert says in str(raised.value)
    assert str(raised.value).startswith("PAYGATE_REDIS_URL")


def test_settings_refuse_a_bad_url_without_echoing_its_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"PAYGATE_REDIS_URL": "redis+sentinel://:hunter2@h:26379"})
    assert "PAYGATE_REDIS_URL" in str(raised.value) and "hunter2" not in str(raised.value)
    accepted = Settings.from_env({"PAYGATE_REDIS_URL": "redis+sentinel://:hunter2@h:26379,h:26380/mymaster"})
    assert "hunter2" not in repr(accepted)
