"""The channels configuration file: provider ids, key files and endpoints (docs/channels.md, "Configuration").

One JSON object with a section per provider; a provider without a section is not offered. In dev mode the channel
simulator writes this file (data_dir/channel-sim/merchant.json) with keys it generated; in production an operator
writes it with the real ids, key files and the providers' real URLs — pointing a channel at the real provider is
a change of this file, nothing else. Key *files* are named here, never keys.

    {"alipay":    {"gateway_url", "app_id", "seller_id", "merchant_private_key", "platform_public_key"},
     "wechatpay": {"base_url", "mchid", "appid", "merchant_private_key", "merchant_serial_no",
                   "platform_public_key", "platform_serial_no", "apiv3_key_path"},
     "unionpay":  {"base_url", "mer_id", "merchant_cert_id", "merchant_private_key", "platform_cert_id",
                   "platform_public_key", "file_trans_url"?, "front_url"?},
     "card":      {"base_url", "account_id", "api_key_path", "webhook_secret_path"}}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from runtime.errors import ConfigurationError
from workers.channels.adapter import ProviderChannel
from workers.channels.alipay.config import AlipayConfig
from workers.channels.alipay.provider import AlipayProvider
from workers.channels.base import Provider
from workers.channels.card.config import CardConfig
from workers.channels.card.provider import CardProvider
from workers.channels.http import ChannelHttp, ChannelLimits
from workers.channels.unionpay.config import UnionPayConfig
from workers.channels.unionpay.provider import UnionPayProvider
from workers.channels.wechat_pay.config import WechatPayConfig
from workers.channels.wechat_pay.provider import WechatPayProvider

# The path of each provider's callbacks at the notification edge (notifications/edge.py).
NOTIFY_PATHS = {"alipay": "alipay", "wechatpay": "wechatpay", "unionpay": "unionpay", "card": "card"}
Observe = Callable[[str, str, str, float], None]  # (channel, purpose, outcome, seconds)


def _alipay(section: dict[str, Any], notify_url: str) -> Provider:
    return AlipayProvider(
        AlipayConfig.load(
            section["gateway_url"],
            section["app_id"],
            section["seller_id"],
            section["merchant_private_key"],
            section["platform_public_key"],
            notify_url,
        )
    )


def _wechatpay(section: dict[str, Any], notify_url: str) -> Provider:
    return WechatPayProvider(
        WechatPayConfig.load(
            section["base_url"],
            section["mchid"],
            section["appid"],
            section["merchant_private_key"],
            section["merchant_serial_no"],
            section["platform_public_key"],
            section["platform_serial_no"],
            section["apiv3_key_path"],
            notify_url,
        )
    )


def _unionpay(section: dict[str, Any], notify_url: str) -> Provider:
    return UnionPayProvider(
        UnionPayConfig.load(
            base_url=section["base_url"],
            mer_id=section["mer_id"],
            cert_id=section["merchant_cert_id"],
            private_key_path=section["merchant_private_key"],
            platform_cert_id=section["platform_cert_id"],
            platform_key_path=section["platform_public_key"],
            back_url=notify_url,
            front_url=section.get("front_url") or notify_url,
            file_trans_url=section.get("file_trans_url", ""),
        )
    )


def _card(section: dict[str, Any], notify_url: str) -> Provider:
    return CardProvider(
        CardConfig.load(
            base_url=section["base_url"],
            account_id=section["account_id"],
            api_key_path=section["api_key_path"],
            webhook_secret_path=section["webhook_secret_path"],
            notify_url=notify_url,
        )
    )


BUILDERS: dict[str, Callable[[dict[str, Any], str], Provider]] = {
    "alipay": _alipay,
    "wechatpay": _wechatpay,
    "unionpay": _unionpay,
    "card": _card,
}


def load_channels(
    path: Path,
    notify_base_url: str,
    limits: ChannelLimits,
    clock: Callable[[], datetime],
    observe: Observe | None = None,
    refused: Callable[[str, str], None] | None = None,
) -> list[ProviderChannel]:
    """Every provider the file configures, each behind its own HTTP client (pool, bounds, circuit breaker)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"PAYGATE_CHANNELS_CONFIG: cannot read the channels file {path}: {error}") from None
    channels = []
    for name, build in BUILDERS.items():
        section = document.get(name)
        if not isinstance(section, dict):
            continue
        notify_url = f"{notify_base_url}/notify/{NOTIFY_PATHS[name]}"
        try:
            provider = build(section, notify_url)
        except (KeyError, OSError, ValueError, TypeError) as error:
            raise ConfigurationError(
                f"PAYGATE_CHANNELS_CONFIG: channel {name} in {path}: {type(error).__name__}: {error}"
            ) from None
        channel_observe = None
        if observe is not None:
            method = provider.method.value

            def channel_observe(purpose: str, outcome: str, seconds: float, method: str = method) -> None:
                observe(method, purpose, outcome, seconds)

        channel_refused = None
        if refused is not None:

            def channel_refused(reason: str, method: str = provider.method.value) -> None:
                refused(method, reason)

        http = ChannelHttp(provider.method.value, limits, observe=channel_observe, refused=channel_refused)
        channels.append(ProviderChannel(provider, http, notify_url, clock))
    return channels
