from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runtime.errors import ConfigurationError
from runtime.settings import Settings


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.metrics_listen == "127.0.0.1:9464"
    assert settings.data_dir == Path(".paygate")
    assert settings.workers >= 1
    assert settings.effective_database_url().startswith("sqlite:///")
    assert settings.effective_redis_url().startswith("unix://")


def test_environment_then_flags() -> None:
    env = {"PAYGATE_WORKERS": "3", "PAYGATE_LISTEN": "0.0.0.0:6000", "PAYGATE_DATA_DIR": "/tmp/x"}
    settings = Settings.from_env(env, workers=5, listen=None)
    assert settings.workers == 5  # the flag wins
    assert settings.listen == "0.0.0.0:6000"  # no flag: the environment
    assert settings.data_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PAYGATE_WORKERS": "many"}, "PAYGATE_WORKERS"),
        ({"PAYGATE_WORKERS": "0"}, "PAYGATE_WORKERS"),
        ({"PAYGATE_LISTEN": "localhost"}, "HOST:PORT"),
        ({"PAYGATE_LISTEN": "1.2.3.4:70000"}, "HOST:PORT"),
        ({"PAYGATE_MODE": "staging"}, "PAYGATE_MODE"),
        ({"PAYGATE_NONCE_TTL_S": "100"}, "PAYGATE_NONCE_TTL_S"),
        ({"PAYGATE_SWEEP_INTERVAL_S": "inf"}, "PAYGATE_SWEEP_INTERVAL_S must be a finite number"),
        ({"PAYGATE_DEFAULT_KEY_RATE_PER_S": "nan"}, "PAYGATE_DEFAULT_KEY_RATE_PER_S must be a finite number"),
        ({"PAYGATE_HEALTH_INTERVAL_S": "0"}, "PAYGATE_HEALTH_INTERVAL_S must be in"),
        ({"PAYGATE_ACCESS_LOG": "maybe"}, "PAYGATE_ACCESS_LOG must be one of 1, true"),
        ({"PAYGATE_LOG_LEVEL": "bogus"}, "PAYGATE_LOG_LEVEL must be one of DEBUG, INFO"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_production_refuses_the_embedded_defaults() -> None:
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env({"PAYGATE_MODE": "production"})
    for variable in ("PAYGATE_DATABASE_URL", "PAYGATE_REDIS_URL", "PAYGATE_MASTER_KEY"):
        assert variable in str(error.value)
    with pytest.raises(ConfigurationError, match="SQLite"):
        Settings.from_env(
            {
                "PAYGATE_MODE": "production",
                "PAYGATE_DATABASE_URL": "sqlite:///x.db",
                "PAYGATE_REDIS_URL": "redis://r",
                "PAYGATE_MASTER_KEY": "k",
            }
        )


def test_production_requires_a_choice_of_risk_rules() -> None:
    production = {
        "PAYGATE_MODE": "production",
        "PAYGATE_DATABASE_URL": "postgresql://u@h/db",
        "PAYGATE_REDIS_URL": "redis://r",
        "PAYGATE_MASTER_KEY": "k",
    }
    with pytest.raises(ConfigurationError, match="PAYGATE_RISK_RULES"):
        Settings.from_env(production)
    assert Settings.from_env({**production, "PAYGATE_RISK_RULES": "off"}).effective_risk_rules() is None
    chosen = Settings.from_env({**production, "PAYGATE_RISK_RULES": "/etc/paygate/risk/rules.toml"})
    assert str(chosen.effective_risk_rules()) == "/etc/paygate/risk/rules.toml"


def test_secrets_stay_out_of_the_repr() -> None:
    settings = Settings.from_env(
        {"PAYGATE_MASTER_KEY": "very-secret", "PAYGATE_DATABASE_URL": "postgresql://u:pw@h/db"}
    )
    assert "very-secret" not in repr(settings)
    assert "pw@" not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"PAYGATE_REQUEST_READ_TIMEOUT_S": "0"},
        {"PAYGATE_MAX_PENDING_CALLS": "0"},
        {"PAYGATE_MAX_PENDING_CALLS_PER_CONNECTION": "-1"},
        {"PAYGATE_MAX_STREAMS_PER_CONNECTION": "0"},
        {"PAYGATE_MAX_FORWARDED_CALLS": "0"},
        {"PAYGATE_LISTEN": "127.0.0.1:50051\n"},
    ],
)
def test_admission_bounds_and_addresses_are_validated(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env(env)


def test_admission_bounds_come_from_the_environment() -> None:
    settings = Settings.from_env({"PAYGATE_REQUEST_READ_TIMEOUT_S": "1.5", "PAYGATE_MAX_PENDING_CALLS": "10"})
    assert (settings.request_read_timeout_s, settings.max_pending_calls) == (1.5, 10)


def _typed_fields(kind: str) -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if str(f.type) == kind]


@pytest.mark.parametrize("name", _typed_fields("int"))
def test_every_whole_number_setting_refuses_other_text_naming_its_variable(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^PAYGATE_{name.upper()} must be a whole number"):
        Settings.from_env({f"PAYGATE_{name.upper()}": "1.5"})


@pytest.mark.parametrize("name", _typed_fields("float"))
@pytest.mark.parametrize("raw", ["soon", "inf", "-inf", "nan"])
def test_every_number_setting_refuses_text_and_non_finite_values(name: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^PAYGATE_{name.upper()} must be a finite number"):
        Settings.from_env({f"PAYGATE_{name.upper()}": raw})


@pytest.mark.parametrize("name", _typed_fields("int") + _typed_fields("float"))
def test_every_number_setting_has_a_range_that_refuses_a_negative_value_naming_it(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"PAYGATE_{name.upper()}"):
        Settings.from_env({f"PAYGATE_{name.upper()}": "-1"})


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PAYGATE_DATABASE_URL": "db.example.com/paygate"}, "PAYGATE_DATABASE_URL"),
        ({"PAYGATE_DATABASE_URL": "oracle://u:hunter2@h/db"}, "PAYGATE_DATABASE_URL"),
        ({"PAYGATE_REDIS_URL": "localhost:6379"}, "PAYGATE_REDIS_URL"),
        ({"PAYGATE_REDIS_URL": "http://u:hunter2@h"}, "PAYGATE_REDIS_URL"),
        ({"PAYGATE_NOTIFY_BASE_URL": "callbacks.example.com"}, "PAYGATE_NOTIFY_BASE_URL"),
    ],
)
def test_urls_are_checked_and_a_password_is_never_echoed(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable) as refused:
        Settings.from_env(env)
    assert "hunter2" not in str(refused.value)


def test_supported_urls_pass() -> None:
    settings = Settings.from_env(
        {
            "PAYGATE_DATABASE_URL": "postgresql+psycopg://u:p@h:5432/db",
            "PAYGATE_REDIS_URL": "rediss://h:6380/0",
            "PAYGATE_NOTIFY_BASE_URL": "https://pay.example.com/cb",
        }
    )
    assert settings.redis_url.reveal() == "rediss://h:6380/0"
