"""Per-channel misbehaviour: what the control surface can make a provider do wrong.

Settings persist in the state file until cleared (`clear`, `POST /control/reset`), except `http_5xx`, which counts
down, and `decline`, which is used once.
"""

from __future__ import annotations

from typing import Any

from channelsim import CHANNELS
from channelsim.store import Store

CALLBACK_MODES = (
    "duplicate",
    "delay_ms",
    "out_of_order",
    "forged",
    "wrong_amount",
    "wrong_currency",
    "wrong_app_id",
    "never",
)
STATEMENT_FAULTS = ("missing_line", "extra_line", "amount_differs", "duplicate_line", "status_differs")
MAX_MS = 60_000
MAX_5XX = 1000


def defaults() -> dict[str, Any]:
    return {
        "latency_ms": 0,
        "timeout": False,
        "http_5xx": 0,
        "decline": None,
        "callback": [],
        "callback_delay_ms": 0,
        "statement": [],
    }


def _int(value: Any, name: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise ValueError(f"{name} must be an integer between 0 and {upper}")
    return value


def _callback(modes: Any, settings: dict[str, Any]) -> list[str]:
    if not isinstance(modes, list) or len(modes) > len(CALLBACK_MODES):
        raise ValueError("callback must be a list of modes")
    chosen: list[str] = []
    for mode in modes:
        name, _, value = str(mode).partition("=")
        if name not in CALLBACK_MODES:
            raise ValueError(f"unknown callback mode {name!r}; one of {', '.join(CALLBACK_MODES)}")
        if name == "delay_ms" and value:
            if not value.isdigit():
                raise ValueError("delay_ms=N takes milliseconds")
            settings["callback_delay_ms"] = _int(int(value), "delay_ms", MAX_MS)
        if name not in chosen:
            chosen.append(name)
    return chosen


def validate(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    settings = defaults() if patch.get("clear") else {**defaults(), **current}
    for key, value in patch.items():
        if key == "clear":
            continue
        if key in ("latency_ms", "callback_delay_ms"):
            settings[key] = _int(value, key, MAX_MS)
        elif key == "http_5xx":
            settings[key] = _int(value, key, MAX_5XX)
        elif key == "timeout":
            settings[key] = bool(value)
        elif key == "decline":
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
                raise ValueError("decline must be a code (a short string) or null")
            settings[key] = value
        elif key == "callback":
            settings[key] = _callback(value, settings)
        elif key == "statement":
            if not isinstance(value, list) or any(v not in STATEMENT_FAULTS for v in value):
                raise ValueError(f"statement faults are: {', '.join(STATEMENT_FAULTS)}")
            settings[key] = list(dict.fromkeys(value))
        else:
            raise ValueError(f"unknown setting {key!r}")
    if "delay_ms" in settings["callback"] and not settings["callback_delay_ms"]:
        settings["callback_delay_ms"] = 2000
    return settings


class Misbehaviour:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, channel: str) -> dict[str, Any]:
        return {**defaults(), **self.store.misbehaviour(channel)}

    def all(self) -> dict[str, dict[str, Any]]:
        return {channel: self.get(channel) for channel in CHANNELS}

    def update(self, channel: str, patch: dict[str, Any]) -> dict[str, Any]:
        settings = validate(self.get(channel), patch)
        self.store.set_misbehaviour(channel, settings)
        return settings

    def reset(self) -> None:
        self.store.clear_misbehaviour()

    def take_5xx(self, channel: str) -> bool:
        settings = self.get(channel)
        if settings["http_5xx"] <= 0:
            return False
        settings["http_5xx"] -= 1
        self.store.set_misbehaviour(channel, settings)
        return True

    def take_decline(self, channel: str, only: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> str | None:
        settings = self.get(channel)
        code = settings["decline"]
        if code is None or code in skip or (only is not None and code not in only):
            return None
        settings["decline"] = None
        self.store.set_misbehaviour(channel, settings)
        return str(code)

    def callback_modes(self, channel: str) -> tuple[set[str], int]:
        settings = self.get(channel)
        return set(settings["callback"]), int(settings["callback_delay_ms"])
