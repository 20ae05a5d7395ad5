"""Turning one `PAYGATE_*` variable's text into its setting's type, or a configuration error that names the
variable and what it accepts (docs/configuration.md, "Errors")."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from paygate.secret import Secret
from runtime.errors import ConfigurationError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def variable(name: str) -> str:
    """The environment variable of a settings field."""
    return f"PAYGATE_{name.upper()}"


def convert(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    if kind == "int":
        return whole_number(name, raw)
    if kind == "float":
        return finite_number(name, raw)
    if kind == "bool":
        return boolean(name, raw)
    if kind == "Path":
        return Path(raw)
    if kind == "Secret[str]":
        return Secret(raw)
    return raw


def whole_number(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{variable(name)} must be a whole number, got {raw!r}") from None


def finite_number(name: str, raw: str) -> float:
    """A number of seconds, milliseconds or calls per second: never NaN or infinite (a NaN passes no comparison and
    fails none, so a range check alone would let it through)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigurationError(f"{variable(name)} must be a finite number, got {raw!r}")
    return value


def boolean(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    allowed = ", ".join((*TRUE_WORDS, *FALSE_WORDS))
    raise ConfigurationError(f"{variable(name)} must be one of {allowed}, got {raw!r}")


_URL_SCHEME = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.*)", re.ASCII | re.DOTALL)
DATABASE_BACKENDS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def _scheme(url: str) -> tuple[str, str] | None:
    match = _URL_SCHEME.fullmatch(url)
    return (match["scheme"], match["rest"]) if match else None


def check_database_url(url: str) -> None:
    """A URL of a database we support; the value is never echoed (it may hold a password)."""
    parsed = _scheme(url)
    if parsed is None or parsed[0].split("+", 1)[0] not in DATABASE_BACKENDS or not parsed[1]:
        raise ConfigurationError(
            "PAYGATE_DATABASE_URL must be sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB or "
            "mysql://USER:PASSWORD@HOST/DB (the value is not shown: it may hold a password)"
        )


def check_http_url(name: str, url: str) -> None:
    parsed = _scheme(url)
    if parsed is None or parsed[0] not in ("http", "https") or not parsed[1].split("/", 1)[0]:
        raise ConfigurationError(f"{variable(name)} must be an http:// or https:// URL, got {url!r}")
