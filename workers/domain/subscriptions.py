"""What a StreamEvents call asks for (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventSubscription:
    """A StreamEvents call: after which of the owner's events ("" from the oldest kept), and which types (empty:
    every type), by their EventType names."""

    after_cursor: str
    types: frozenset[str]
