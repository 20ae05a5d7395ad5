"""The worker's methods beyond the payment core, as entries of its method table (workers/server.py): webhook
management (docs/events.md) and the card vault (docs/security.md, "Card and personal data")."""

from __future__ import annotations

from workers.service import PaymentService
from workers.vault import rpc as vault_rpc
from workers.webhooks import rpc as webhook_rpc
from workers.webhooks.endpoints import Endpoints


def extra_methods(service: PaymentService, webhooks: Endpoints | None) -> dict[str, webhook_rpc.Entry]:
    table: dict[str, webhook_rpc.Entry] = {}
    if service.vault is not None:
        table.update(vault_rpc.methods(service.vault))
    if webhooks is not None:
        table.update(webhook_rpc.methods(webhooks))
    return table
