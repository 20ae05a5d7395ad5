"""The one place risk decisions taken by people and rule changes are reported for the audit trail (docs/risk.md).

`record_risk_event` is called for every rule reload a worker applies or refuses, and for every review release
or refusal, with who did it and what. Until the audit trail is wired in here it writes a structured log line;
details carry ids, rule names, counts and reasons — never a phone number or other payer data.
"""

from __future__ import annotations

import logging

log = logging.getLogger("paygate.risk.audit")


def record_risk_event(event: str, actor: str, details: dict[str, str]) -> None:
    """`event`: risk.rules_applied, risk.rules_refused, risk.review_released, risk.review_refused."""
    log.info("risk audit event", extra={"fields": {"event": event, "actor": actor, **details}})
