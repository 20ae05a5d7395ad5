"""PAYGATE_REDIS_URL: a single server (`redis://`, `rediss://`, `unix://`) or a Sentinel-managed primary
(`redis+sentinel://`, `rediss+sentinel://`), parsed and checked when the settings are built (docs/configuration.md,
"Redis"). Standard library only, so the settings need not import redis-py; runtime/redis_ha.py makes the clients.

Everything redis-py would only refuse at the first call is refused here, at start: an unknown option would
otherwise reach a connection constructor as a keyword argument and fail every call (as INTERNAL).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from runtime.errors import ConfigurationError

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
SERVER_SCHEMES = {"redis": False, "rediss": True, "unix": False}
TLS_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
TLS_OPTIONS = (*TLS_FILE_OPTIONS, "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})", re.ASCII)
_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,128}", re.ASCII)
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
MAX_SENTINELS = 16
# What the error messages call the URL; the value itself is never repeated (it may carry a password).
URL_NAME = "PAYGATE_REDIS_URL"


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL. `sentinels` is empty for a single server, whose URL goes to redis-py unchanged."""

    url: str = field(repr=False)
    tls: bool
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls_options: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)


def parse_redis_url(url: str) -> RedisTarget:
    """The target `url` names, or a ConfigurationError naming PAYGATE_REDIS_URL and what is wrong with it."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if not rest or (scheme not in SENTINEL_SCHEMES and scheme not in SERVER_SCHEMES):
        known = ", ".join(f"{name}://" for name in (*SERVER_SCHEMES, *SENTINEL_SCHEMES))
        raise ConfigurationError(f"{URL_NAME} must start with one of {known}")
    tls = SENTINEL_SCHEMES.get(scheme, SERVER_SCHEMES.get(scheme, False))
    _, _, query = rest.partition("?")
    options = _options(query, tls, sentinel=scheme in SENTINEL_SCHEMES)
    tls_options = {name: options[name] for name in TLS_OPTIONS if name in options}
    if scheme in SERVER_SCHEMES:
        _check_server_url(url, scheme)
        return RedisTarget(url, tls, tls_options=tls_options)
    return _sentinel_target(url, rest, tls, options, tls_options)


def _options(query: str, tls: bool, *, sentinel: bool) -> dict[str, Any]:
    allowed = {"db", *TLS_OPTIONS, *(SENTINEL_OPTIONS if sentinel else ())}
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in allowed:
            raise ConfigurationError(f"{URL_NAME}: unknown option {name!r} (known: {', '.join(sorted(allowed))})")
        if name in options:
            raise ConfigurationError(f"{URL_NAME}: option {name!r} given twice")
        options[name] = value
    if not tls and any(name in options for name in TLS_OPTIONS):
        raise ConfigurationError(f"{URL_NAME}: ssl_* options need a TLS scheme (rediss:// or rediss+sentinel://)")
    if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
        raise ConfigurationError(f"{URL_NAME}: give ssl_certfile and ssl_keyfile together (a client certificate)")
    for name in TLS_FILE_OPTIONS:
        if name in options and not os.access(options[name], os.R_OK):
            raise ConfigurationError(f"{URL_NAME}: {name} names a file that does not exist or cannot be read")
    if "ssl_check_hostname" in options:
        checked = _BOOLEANS.get(options["ssl_check_hostname"].lower())
        if checked is None:
            raise ConfigurationError(f"{URL_NAME}: ssl_check_hostname must be true or false")
        options["ssl_check_hostname"] = checked
    if "db" in options:
        options["db"] = _db(options["db"])
    return options


def _db(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 15:
        raise ConfigurationError(f"{URL_NAME}: the database number must be 0-15")
    return int(text)


def _check_server_url(url: str, scheme: str) -> None:
    """redis-py parses these itself; refuse here what it would only refuse (or misread) at the first call."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{URL_NAME}: malformed host or port") from None
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"{URL_NAME}: unix:// needs the socket path (unix:///run/redis.sock)")
        return
    if not parts.hostname:
        raise ConfigurationError(f"{URL_NAME}: {scheme}:// needs a host")
    if port == 0:
        raise ConfigurationError(f"{URL_NAME}: the port must be 1-65535")
    path = parts.path.strip("/")
    if path:
        _db(path)


def _sentinel_target(
    url: str, rest: str, tls: bool, options: dict[str, Any], tls_options: dict[str, Any]
) -> RedisTarget:
    location, _, _ = rest.partition("?")
    netloc, _, path = location.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    username, password = _userinfo(userinfo) if at else (None, None)
    sentinels = tuple(_sentinel_address(part) for part in hosts.split(","))
    if not 1 <= len(sentinels) <= MAX_SENTINELS:
        raise ConfigurationError(f"{URL_NAME}: name 1-{MAX_SENTINELS} Sentinels as host:port,host:port")
    service, _, db_text = path.strip("/").partition("/")
    if not _SERVICE.fullmatch(service):
        raise ConfigurationError(
            f"{URL_NAME}: the Sentinel URL needs the service name after the hosts "
            "(redis+sentinel://host:26379,host:26379/mymaster[/db])"
        )
    if db_text and "db" in options:
        raise ConfigurationError(f"{URL_NAME}: give the database number in the path or as ?db=, not both")
    db = _db(db_text) if db_text else options.get("db", 0)
    return RedisTarget(
        url,
        tls,
        sentinels=sentinels,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        tls_options=tls_options,
    )


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, secret = userinfo.partition(":")
    return (unquote(user) or None), (unquote(secret) if colon and secret else None)


def _sentinel_address(text: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigurationError(f"{URL_NAME}: each Sentinel must be host:port (for example 10.0.0.5:26379)")
    return match["host"].strip("[]"), int(match["port"])
