"""What every simulated provider implements, and the values they hand to the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, tzinfo
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web

from channelsim.common import SHANGHAI
from channelsim.store import Order, Refund

if TYPE_CHECKING:
    from channelsim.engine import Sim


@dataclass
class Note:
    """One asynchronous notification, ready to POST (headers computed at send time are added by the provider)."""

    url: str
    body: str
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Line:
    """One line of a day's statement: a payment or a refund (or a line the statement faults made up)."""

    kind: str  # payment | refund
    order: Order
    refund: Refund | None
    amount: int
    at: float
    status_differs: bool = False


class Provider:
    name: ClassVar[str] = ""
    statement_tz: ClassVar[tzinfo] = SHANGHAI
    # Decline codes the provider answers synchronously instead of failing the payment (UnionPay 03/04/05).
    sync_decline_codes: ClassVar[tuple[str, ...]] = ()
    default_fail_code: ClassVar[str] = "FAILED"

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.store = sim.store
        self.keys = sim.keys

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def status_of(self, order: Order) -> str:
        raise NotImplementedError

    def note(self, event: str, order: Order, refund: Refund | None, flags: set[str]) -> Note | None:
        """The notification for `event` (paid, failed, refund, captured, voided), or None if the provider sends none.

        `flags` may hold forged, wrong_amount, wrong_currency, wrong_app_id: the callback misbehaviour to apply.
        """
        raise NotImplementedError

    def send_headers(self, body: str, flags: list[str]) -> dict[str, str]:
        """Headers computed at each delivery attempt (the card webhook's timestamped signature)."""
        return {}

    def acknowledged(self, status: int, text: str) -> bool:
        return 200 <= status < 300

    def paid_amount(self, order: Order) -> int:
        return order.amount

    def error_5xx(self) -> web.StreamResponse:
        raise NotImplementedError

    def internal_error(self) -> web.StreamResponse:
        return self.error_5xx()

    def render_statement(self, day: date, lines: list[Line]) -> tuple[str, str]:
        """(content type, text) of the day's bill in this provider's format."""
        raise NotImplementedError
