"""UnionPay online gateway (version 5.1.0, signMethod 01): see provider.py."""

from workers.channels.unionpay.config import UnionPayConfig
from workers.channels.unionpay.provider import UnionPayProvider

__all__ = ["UnionPayConfig", "UnionPayProvider"]
