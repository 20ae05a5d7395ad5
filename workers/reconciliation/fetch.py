"""A channel and its statement of one provider day, fetched the way the workers call providers (docs/reconciliation.md).

The channel comes from the channels configuration file, exactly as the workers build it (`load_channels`); the
statement is asked for by the pure provider module and sent by the channel's own `ChannelHttp` (the one network
client: timeouts, retries of idempotent calls, the circuit breaker). Some providers answer the first call with a
download URL, i.e. another call; the exchange is bounded so that a provider cannot keep us going round.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, tzinfo

from runtime.errors import ConfigurationError, Unavailable
from runtime.settings import Settings
from workers.channels.adapter import ProviderChannel
from workers.channels.base import CHINA_TIME, ProviderAnswerError, StatementLine
from workers.channels.config import load_channels
from workers.channels.http import ChannelLimits, TransportFailed
from workers.domain.types import Method
from workers.reconciliation.match import ONE_DAY, ProviderDay

# China keeps no daylight saving time, so a fixed offset is Asia/Shanghai exactly (and needs no tz database).
CHINA = CHINA_TIME
# Whose calendar a statement's day is: the Chinese providers bill by Beijing days, the card processor by UTC days.
DAY_ZONES: dict[Method, tzinfo] = {
    Method.ALIPAY: CHINA,
    Method.WECHAT_PAY: CHINA,
    Method.UNIONPAY: CHINA,
    Method.CARD: UTC,
}
MAX_STEPS = 3  # the statement call, a download, and one more redirection at most


class StatementUnavailable(Exception):
    """The provider's statement could not be fetched or read; nothing was compared or stored."""


def provider_day(method: Method, day: date) -> ProviderDay:
    start = datetime.combine(day, time(), DAY_ZONES[method]).astimezone(UTC)
    return ProviderDay(start, start + ONE_DAY)


def load_channel(settings: Settings, method: Method, clock: Callable[[], datetime]) -> ProviderChannel:
    """The configured channel of `method`; ConfigurationError (exit 2) when the configuration has none."""
    path = settings.effective_channels_config()
    if path is None or not path.exists():
        where = f"{path} does not exist" if path else "set PAYGATE_CHANNELS_CONFIG"
        raise ConfigurationError(f"the {method.value} channel is not configured: no channels configuration ({where})")
    limits = ChannelLimits(
        connect_timeout_s=settings.channel_connect_timeout_s,
        read_timeout_s=settings.channel_read_timeout_s,
        max_in_flight=settings.channel_max_in_flight,
        breaker_failures=settings.channel_breaker_failures,
        breaker_open_s=settings.channel_breaker_open_s,
    )
    found = None
    for channel in load_channels(path, settings.effective_notify_base_url(), limits, clock):
        if channel.method is method:
            found = channel
        else:
            channel.http.close()
    if found is None:
        raise ConfigurationError(f"the {method.value} channel is not configured in {path}")
    return found


def fetch_statement(channel: ProviderChannel, day: date, clock: Callable[[], datetime]) -> list[StatementLine]:
    call = channel.provider.statement(day, clock())
    for _ in range(MAX_STEPS):
        try:
            answer = channel.provider.read_statement(day, channel.http.send(call), clock())
        except (TransportFailed, ProviderAnswerError, Unavailable) as error:
            raise StatementUnavailable(
                f"the {channel.method.value} statement of {day} is unavailable: {error}"
            ) from None
        if isinstance(answer, list):
            return answer
        call = answer
    raise StatementUnavailable(f"the {channel.method.value} statement of {day} took more than {MAX_STEPS} calls")
