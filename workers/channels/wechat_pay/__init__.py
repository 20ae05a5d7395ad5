"""WeChat Pay API v3: WechatPayConfig for the settings and keys, WechatPayProvider for the protocol."""

from __future__ import annotations

from workers.channels.wechat_pay.config import PRODUCTION_BASE_URL, WechatPayConfig
from workers.channels.wechat_pay.provider import WechatPayProvider

__all__ = ["PRODUCTION_BASE_URL", "WechatPayConfig", "WechatPayProvider"]
