"""The Secret type: nothing shows the value but .reveal() (paygate/secret.py)."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle

import pytest

from paygate.secret import Secret
from runtime.logs import JsonFormatter
from runtime.settings import Settings

CARD = "4242424242424242"


def test_repr_str_and_format_show_nothing() -> None:
    secret = Secret(CARD)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", "%s" % (secret,)]  # noqa: UP031 - the logging style too
    assert all(CARD not in text and "Secret(***)" in text for text in shown)
    assert repr([secret, {"k": secret}]).count("Secret(***)") == 2
    assert secret.reveal() == CARD


def test_logging_shows_nothing_in_messages_and_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test-secret")
    logger.addHandler(handler)
    try:
        logger.warning("card %s %r", Secret(CARD), Secret(CARD), extra={"fields": {"card": Secret(CARD)}})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert CARD not in line and line.count("Secret(***)") == 3


def test_not_picklable_nor_json_serialisable() -> None:
    with pytest.raises(TypeError, match="picklable"):
        pickle.dumps(Secret(CARD))
    with pytest.raises(TypeError):
        json.dumps({"card": Secret(CARD)})


def test_equality_only_between_secrets() -> None:
    assert Secret(CARD) == Secret(CARD)
    assert Secret(CARD) != Secret(CARD[:-1] + "1")
    assert Secret(CARD) != CARD  # a bare value never equals a secret
    assert Secret(b"x") != Secret("x")
    assert not Secret("") and Secret("x")
    assert copy.deepcopy(Secret(CARD)).reveal() == CARD
    with pytest.raises(AttributeError):
        Secret(CARD)._value = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Secret(42)  # type: ignore[type-var]


def test_settings_wrap_credentials() -> None:
    settings = Settings(master_key="k" * 44, database_url="postgresql://u:pw@h/db", redis_url="redis://:pw@h")
    assert isinstance(settings.master_key, Secret) and isinstance(settings.database_url, Secret)
    assert "pw" not in repr(settings) and "kkkk" not in repr(settings)
    assert settings.effective_database_url() == "postgresql://u:pw@h/db"
    assert settings.effective_redis_url() == "redis://:pw@h"
    from_env = Settings.from_env({"PAYGATE_MASTER_KEY": "abc", "PAYGATE_MASTER_KEY_PREVIOUS": "d,e"})
    assert from_env.master_key.reveal() == "abc" and from_env.master_key_previous.reveal() == "d,e"
