"""The channels a worker can collect through, by payment method."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.errors import Unimplemented
from workers.channels.adapter import ProviderChannel
from workers.channels.base import Channel, Provider
from workers.domain.types import Method


class Channels:
    def __init__(self, channels: Sequence[Channel]) -> None:
        self._by_method = {channel.method: channel for channel in channels}

    def get(self, method: Method) -> Channel:
        channel = self._by_method.get(method)
        if channel is None:
            available = ", ".join(m.name for m in self._by_method) or "none"
            raise Unimplemented(
                f"payment method {method.name} is not available on this deployment yet (available: {available})"
            )
        return channel

    def provider(self, method: Method) -> Provider | None:
        """The protocol module behind a channel, for its callbacks; None for in-process channels."""
        channel = self._by_method.get(method)
        return channel.provider if isinstance(channel, ProviderChannel) else None

    def close(self) -> None:
        for channel in self._by_method.values():
            if isinstance(channel, ProviderChannel):
                channel.http.close()
