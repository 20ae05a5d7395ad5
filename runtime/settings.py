"""One typed, validated settings object, built once at start and passed down.

Sources, later ones winning: built-in defaults, `PAYGATE_*` environment variables, command-line flags.
Nothing here reads the environment at import time; `Settings.from_env()` does it when asked.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paygate.secret import Secret
from runtime.errors import ConfigurationError
from runtime.redis_url import parse_redis_url

_HOST_PORT = re.compile(r"(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})", re.ASCII)
MODES = ("dev", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SWITCHABLE_LISTENERS = ("notify_listen", "channel_sim_listen")
# Fields that hold credentials: wrapped in paygate.secret.Secret, so no repr, log line or f-string shows them.
SECRET_FIELDS = ("database_url", "redis_url", "master_key", "master_key_previous")


def parse_host_port(value: str, what: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(value)
    if not match or not 0 <= int(match["port"]) <= 65535:
        raise ConfigurationError(f"{what} must be HOST:PORT (for example 127.0.0.1:50051), got {value!r}")
    return match["host"], int(match["port"])


@dataclass(frozen=True)
class Settings:
    """Everything a Paygate process needs to know; see docs/configuration.md for each field."""

    mode: str = "dev"
    data_dir: Path = Path(".paygate")
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Empty means the embedded defaults: a SQLite file and a private redis-server under data_dir.
    # URLs may carry passwords and the master keys are secrets: Secret keeps them out of reprs and logs (a plain
    # str given here is wrapped by __post_init__).
    database_url: Secret[str] = field(default=Secret(""), repr=False)
    redis_url: Secret[str] = field(default=Secret(""), repr=False)
    redis_prefix: str = "paygate:"
    # The master key ring (docs/security.md, "Secrets at rest and the master key"): the current key (or a file
    # holding it), and previous keys that still open old blobs but never seal (comma-separated, or a file with one
    # key per line).
    master_key: Secret[str] = field(default=Secret(""), repr=False)
    master_key_file: str = ""
    master_key_previous: Secret[str] = field(default=Secret(""), repr=False)
    master_key_previous_file: str = ""
    # Signature rules (docs/signing.md).
    timestamp_skew_s: int = 300
    nonce_ttl_s: int = 600
    # Locks (docs/ledger.md, "Why Redis is not trusted for correctness").
    lock_lease_ms: int = 5000
    lock_wait_ms: int = 2000
    # SANDBOX payments: "immediate" (succeed at once) or "deferred" (PENDING until `paygate sandbox confirm`).
    sandbox_confirmation: str = "immediate"
    # PENDING payments older than this are CLOSED by the sweeper that runs in every worker (one at a time).
    payment_ttl_s: int = 900
    sweep_interval_s: float = 5.0
    # The platform's share of a course purchase, in basis points (2000 = 20 %); the creator gets the rest.
    platform_fee_bps: int = 2000
    # Keys are kept for as long as channels may re-deliver notifications: days, not hours.
    idempotency_retention_s: int = 30 * 86400
    # How long the gateway trusts a cached API key before re-reading it (revocations also announce themselves).
    key_cache_ttl_s: float = 5.0
    # Calls that never finish (docs/architecture.md): how long a call may take to present its request message
    # after its headers; how many such pending calls the gateway holds per connection and in total (the oldest is
    # ended when full); HTTP/2 streams per connection; authenticated calls in flight to workers.
    request_read_timeout_s: float = 5.0
    max_pending_calls_per_connection: int = 64
    max_pending_calls: int = 2048
    max_streams_per_connection: int = 100
    max_forwarded_calls: int = 4096
    # Limits per API key (docs/security.md, "Rate limits and quotas"). These are the stack's defaults; a key's own
    # limits (`paygate keys create --rate ...`, `keys set-limits`) replace them. A rate of 0 means no limit.
    # Token buckets: calls per second and burst per key, and per (key, user) for the methods that name a user.
    default_key_rate_per_s: float = 20_000.0
    default_key_burst: int = 40_000
    default_user_rate_per_s: float = 500.0
    default_user_burst: int = 1_000
    # Unary calls of one key in flight to workers through one gateway process (0: no limit).
    default_max_concurrent_calls: int = 1_000
    # The largest request message the gateway reads (larger ones are refused by gRPC before any handler runs).
    max_message_bytes: int = 1024 * 1024
    # Deadlines of unary calls forwarded to workers: a call without one gets the default, and none is longer than
    # the cap (event streams are exempt: they last as long as their caller wants).
    default_call_deadline_s: float = 30.0
    max_call_deadline_s: float = 60.0
    # How often each gateway writes the keys' last-used times to the database (not once per call).
    key_last_used_flush_s: float = 5.0
    # Payment channels (docs/channels.md). Provider callbacks arrive at the notification edge on notify_listen
    # ("" runs none); providers are told notify_base_url (default http://notify_listen), which production sets to
    # the public URL. channels_config is the JSON file of provider ids, keys and endpoints; in dev mode `serve`
    # also runs the channel simulator on channel_sim_listen ("" runs none) and uses the file it writes.
    notify_listen: str = "127.0.0.1:8080"
    notify_base_url: str = ""
    channels_config: str = ""
    channel_sim_listen: str = "127.0.0.1:8090"
    channel_connect_timeout_s: float = 2.0
    channel_read_timeout_s: float = 10.0
    channel_max_in_flight: int = 4  # per worker process; keep it well below worker_threads
    channel_breaker_failures: int = 5
    channel_breaker_open_s: float = 10.0
    # The janitor asks providers about unsettled attempts: first after this, then backing off to the maximum.
    janitor_interval_s: float = 2.0
    janitor_first_check_s: float = 5.0
    janitor_max_check_s: float = 600.0
    # Worker pool health.
    health_interval_s: float = 1.0
    worker_threads: int = 8
    # Group commit (docs/ledger.md, "Group commit"): a worker commits the wallet purchases that arrive together in
    # one transaction — at most this many, gathered for at most this long after the first one arrives.
    group_commit_max_batch: int = 64
    group_commit_max_wait_ms: float = 0.0
    # Event streams (docs/events.md): a heartbeat after this long without an event; a stream also looks for new
    # events this often when no wake-up came (they come over Redis within milliseconds); streams per worker and
    # per gateway.
    events_heartbeat_s: float = 15.0
    events_poll_s: float = 1.0
    max_event_streams: int = 1024
    # Webhooks (docs/events.md): how often the relay looks for due deliveries, the delay after each failed attempt
    # (comma-separated seconds; empty for the documented 3-day schedule), and the HTTP timeouts of a delivery.
    webhook_interval_s: float = 0.5
    webhook_retry_schedule_s: str = ""
    webhook_connect_timeout_s: float = 2.0
    webhook_read_timeout_s: float = 5.0
    webhook_round_budget_s: float = 5.0
    # TLS (docs/security.md, "TLS and mutual TLS"): PEM paths. tls_cert/tls_key on the gateway's public port
    # (tls_client_ca: also require client certificates it signed); internal_tls_*: the CA every process of the
    # stack trusts and this process's own certificate and key (mutual TLS gateway/edge -> workers). Production
    # refuses to serve without them; `paygate serve` in dev mode makes and uses dev ones (stack/dev_certs.py).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    internal_tls_ca: str = ""
    internal_tls_cert: str = ""
    internal_tls_key: str = ""
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    # The risk rules file (docs/risk.md): a TOML path, reloaded by the workers when it changes; "" or "off" runs no
    # rules (every payment allowed). Production mode requires it to be set, to a file or to "off" explicitly.
    risk_rules: str = ""

    def __post_init__(self) -> None:
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Secret):
                object.__setattr__(self, name, Secret(str(value)))
        if self.mode not in MODES:
            raise ConfigurationError(f"PAYGATE_MODE must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            levels = ", ".join(LOG_LEVELS)
            raise ConfigurationError(f"PAYGATE_LOG_LEVEL must be one of {levels}, got {self.log_level!r}")
        if self.redis_url:  # a malformed URL stops the start, naming PAYGATE_REDIS_URL (docs/configuration.md)
            parse_redis_url(self.redis_url.reveal())
        parse_host_port(self.listen, "listen address")
        parse_host_port(self.metrics_listen, "metrics address")
        if not 1 <= self.workers <= 256:
            raise ConfigurationError(f"workers must be between 1 and 256, got {self.workers}")
        for name in (
            "timestamp_skew_s",
            "nonce_ttl_s",
            "lock_lease_ms",
            "lock_wait_ms",
            "idempotency_retention_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.nonce_ttl_s < 2 * self.timestamp_skew_s:
            # A nonce must be remembered for as long as its timestamp can still be accepted (± skew).
            raise ConfigurationError("nonce_ttl_s must be at least twice timestamp_skew_s")
        if self.sandbox_confirmation not in ("immediate", "deferred"):
            raise ConfigurationError("PAYGATE_SANDBOX_CONFIRMATION must be immediate or deferred")
        if self.payment_ttl_s <= 0 or self.sweep_interval_s <= 0:
            raise ConfigurationError("payment_ttl_s and sweep_interval_s must be positive")
        if not 0 <= self.platform_fee_bps <= 10_000:
            raise ConfigurationError(f"platform_fee_bps must be between 0 and 10000, got {self.platform_fee_bps}")
        if not 0 < self.request_read_timeout_s <= 300:
            raise ConfigurationError("request_read_timeout_s must be in (0, 300]")
        for name in ("max_pending_calls_per_connection", "max_pending_calls", "max_streams_per_connection"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ConfigurationError(f"{name} must be between 1 and 1000000")
        if not 1 <= self.max_forwarded_calls <= 1_000_000:
            raise ConfigurationError("max_forwarded_calls must be between 1 and 1000000")
        self._check_key_limits()
        self._check_channels()
        if not 1 <= self.worker_threads <= 256:
            raise ConfigurationError("worker_threads must be between 1 and 256")
        if not 1 <= self.group_commit_max_batch <= 1024 or not 0 <= self.group_commit_max_wait_ms <= 100:
            raise ConfigurationError(
                "group_commit_max_batch must be in [1, 1024] and group_commit_max_wait_ms in [0, 100]"
            )
        if not 0 < self.events_heartbeat_s <= 300 or not 0 < self.events_poll_s <= 60:
            raise ConfigurationError("events_heartbeat_s must be in (0, 300] and events_poll_s in (0, 60]")
        if not 1 <= self.max_event_streams <= 1_000_000:
            raise ConfigurationError("max_event_streams must be between 1 and 1000000")
        self.webhook_schedule()  # refuses a malformed schedule at start
        if not 0 < self.webhook_interval_s <= 60:
            raise ConfigurationError("webhook_interval_s must be in (0, 60]")
        for name in ("webhook_connect_timeout_s", "webhook_read_timeout_s", "webhook_round_budget_s"):
            if not 0 < getattr(self, name) <= 30:
                raise ConfigurationError(f"{name} must be in (0, 30]")
        self._check_tls()
        if self.mode == "production":
            self._refuse_unsafe_production_defaults()

    def _check_tls(self) -> None:
        """Whole sets only; the files themselves are read by runtime/tls.py where they are used."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigurationError("set both PAYGATE_TLS_CERT and PAYGATE_TLS_KEY, or neither")
        internal = (self.internal_tls_ca, self.internal_tls_cert, self.internal_tls_key)
        if any(internal) and not all(internal):
            raise ConfigurationError(
                "set all of PAYGATE_INTERNAL_TLS_CA, PAYGATE_INTERNAL_TLS_CERT and PAYGATE_INTERNAL_TLS_KEY, or none"
            )

    def webhook_schedule(self) -> tuple[float, ...] | None:
        """The retry delays of PAYGATE_WEBHOOK_RETRY_SCHEDULE_S, or None for the default schedule."""
        if not self.webhook_retry_schedule_s.strip():
            return None
        try:
            delays = tuple(float(part) for part in self.webhook_retry_schedule_s.split(","))
        except ValueError:
            raise ConfigurationError("PAYGATE_WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds") from None
        if not 1 <= len(delays) <= 100 or not all(0 < d <= 7 * 86400 for d in delays):
            raise ConfigurationError("PAYGATE_WEBHOOK_RETRY_SCHEDULE_S: 1-100 delays, each in (0, 604800] seconds")
        return delays

    def _check_key_limits(self) -> None:
        for name in ("default_key_rate_per_s", "default_user_rate_per_s"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ConfigurationError(f"{name} must be in [0, 1000000] calls per second (0: no limit)")
        for name in ("default_key_burst", "default_user_burst"):
            if not 1 <= getattr(self, name) <= 10_000_000:
                raise ConfigurationError(f"{name} must be in [1, 10000000] calls")
        if not 0 <= self.default_max_concurrent_calls <= 1_000_000:
            raise ConfigurationError("default_max_concurrent_calls must be in [0, 1000000] (0: no limit)")
        if not 1024 <= self.max_message_bytes <= 4 * 1024 * 1024:
            # Workers read at most 4 MiB (gRPC's default), so a larger gateway limit would only move the refusal.
            raise ConfigurationError("max_message_bytes must be in [1024, 4194304]")
        if not 0 < self.default_call_deadline_s <= self.max_call_deadline_s <= 3600:
            raise ConfigurationError(
                "default_call_deadline_s and max_call_deadline_s must be positive, the default no longer than the "
                "cap, and the cap at most 3600"
            )
        if not 0 < self.key_last_used_flush_s <= 300:
            raise ConfigurationError("key_last_used_flush_s must be in (0, 300]")

    def _check_channels(self) -> None:
        for name in ("notify_listen", "channel_sim_listen"):
            if getattr(self, name):
                parse_host_port(getattr(self, name), name.replace("_", " "))
        for name in ("channel_connect_timeout_s", "channel_read_timeout_s", "channel_breaker_open_s"):
            if not 0 < getattr(self, name) <= 600:
                raise ConfigurationError(f"{name} must be in (0, 600]")
        if not 1 <= self.channel_max_in_flight <= 1024 or not 1 <= self.channel_breaker_failures <= 1000:
            raise ConfigurationError(
                "channel_max_in_flight must be in [1, 1024] and channel_breaker_failures in [1, 1000]"
            )
        if not 0 < self.janitor_first_check_s <= self.janitor_max_check_s or self.janitor_interval_s <= 0:
            raise ConfigurationError("janitor intervals must be positive, first check no later than the maximum")

    def _refuse_unsafe_production_defaults(self) -> None:
        missing = [
            env
            for env, value in (
                ("PAYGATE_DATABASE_URL", self.database_url),
                ("PAYGATE_REDIS_URL", self.redis_url),
                ("PAYGATE_MASTER_KEY or PAYGATE_MASTER_KEY_FILE", self.master_key or self.master_key_file),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError("production mode refuses the embedded dev defaults; set " + ", ".join(missing))
        if os.environ.get("PAYGATE_FAILPOINT"):
            raise ConfigurationError("production mode refuses PAYGATE_FAILPOINT (a crash point for tests)")
        if self.database_url.reveal().startswith("sqlite"):
            raise ConfigurationError("production mode needs PostgreSQL or MySQL, not SQLite")
        if not self.risk_rules:
            raise ConfigurationError("production mode needs PAYGATE_RISK_RULES: a rules file, or off (docs/risk.md)")

    # -- derived paths -------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def metrics_dir(self) -> Path:
        return self.data_dir / "metrics"

    @property
    def embedded_redis_socket(self) -> Path:
        return self.run_dir / "redis.sock"

    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url.reveal()
        return f"sqlite:///{(self.data_dir / 'paygate.sqlite3').resolve()}"

    def effective_notify_base_url(self) -> str:
        return self.notify_base_url.rstrip("/") or f"http://{self.notify_listen}"

    @property
    def channel_sim_dir(self) -> Path:
        return self.data_dir / "channel-sim"

    def effective_channels_config(self) -> Path | None:
        """The channel configuration file, if any: set explicitly, or the simulator's in dev mode."""
        if self.channels_config:
            return Path(self.channels_config)
        if self.mode == "dev" and self.channel_sim_listen:
            return self.channel_sim_dir / "merchant.json"
        return None

    def effective_risk_rules(self) -> Path | None:
        """The risk rules file, or None when no rules run."""
        if not self.risk_rules or self.risk_rules.lower() == "off":
            return None
        return Path(self.risk_rules)

    def effective_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url.reveal()
        return f"unix://{self.embedded_redis_socket.resolve()}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `PAYGATE_*` variables, then `overrides` (flags; None means 'not given')."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"PAYGATE_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in SWITCHABLE_LISTENERS:  # "off": do not run that listener at all
            if str(values.get(name, "")).lower() == "off":
                values[name] = ""
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(**values)


def _convert(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "Secret[str]":
            return Secret(raw)
    except ValueError:
        raise ConfigurationError(f"PAYGATE_{name.upper()} must be a {kind}, got {raw!r}") from None
    return raw
