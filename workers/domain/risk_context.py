"""What a caller tells the risk engine about the payer (docs/risk.md), as a command carries it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RiskContext:
    """Every field optional ("" when not given). The phone number never travels further than the engine, which
    keeps only its keyed fingerprint; it is left out of reprs so it cannot reach a log line by accident."""

    device_id: str = ""
    ip_address: str = ""  # validated, in its compressed form
    phone_number: str = field(default="", repr=False)
    region: str = ""


NO_CONTEXT = RiskContext()
