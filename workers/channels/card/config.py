"""What the card adapter needs: the processor's address, our account there and our two secrets.

The secrets are read from files (never from the command line or the environment, where `ps` and crash dumps
show them) and are left out of `repr`, so a logged config or a traceback that prints it leaks neither.
Pointing the adapter at a real processor changes these values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CardConfig:
    base_url: str  # without /v1 and without a trailing slash; dev: http://127.0.0.1:8090/card
    account_id: str  # our account at the processor, as its answers name it
    api_key: str = field(repr=False)  # Bearer key for every API call
    webhook_secret: str = field(repr=False)  # HMAC key of the Card-Signature header
    notify_url: str = ""  # our webhook endpoint, used when an order names none

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"card base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.account_id or not self.api_key or not self.webhook_secret:
            # Never quote the values: the message must stay safe to log.
            raise ValueError("card account_id, api_key and webhook_secret must all be set")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def load(
        cls,
        *,
        base_url: str,
        account_id: str,
        api_key_path: str | Path,
        webhook_secret_path: str | Path,
        notify_url: str = "",
    ) -> CardConfig:
        return cls(
            base_url=base_url,
            account_id=account_id,
            api_key=Path(api_key_path).read_text(encoding="utf-8").strip(),
            webhook_secret=Path(webhook_secret_path).read_text(encoding="utf-8").strip(),
            notify_url=notify_url,
        )
