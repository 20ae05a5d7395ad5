"""channelsim: a payment-provider simulator (Alipay, WeChat Pay v3, UnionPay 5.1.0, a Stripe-like card processor).

Run it with `python -m channelsim` (see channelsim/README.md). Nothing here talks to a real provider.
"""

from __future__ import annotations

__all__ = ["CHANNELS"]

CHANNELS = ("alipay", "wechatpay", "unionpay", "card")
