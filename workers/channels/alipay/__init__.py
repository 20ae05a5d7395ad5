"""Alipay openapi (RSA2): AlipayConfig for the settings and keys, AlipayProvider for the protocol."""

from __future__ import annotations

from workers.channels.alipay.config import PRODUCTION_GATEWAY, AlipayConfig
from workers.channels.alipay.provider import AlipayProvider

__all__ = ["PRODUCTION_GATEWAY", "AlipayConfig", "AlipayProvider"]
