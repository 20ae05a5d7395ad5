"""The risk engine of a worker (docs/risk.md): the rules in force, reloaded when their file changes, and what the
rules need from outside the request — velocity from Redis, the phone number's keyed fingerprint.

Reloading: a background job of the worker looks at the file's modification time, size and inode once a second
(a `stat`, microseconds) and reads the file again when they changed; assessments only read the rules in force, so
the payment path never touches the file or the audit trail. A file that fails its checks is not used: the rules in
force stay, the refusal is logged once with its reason and counted (`paygate_risk_rule_reloads_total{outcome=
"refused"}`), and the next change is tried again. So an operator (or a Kubernetes ConfigMap update) replaces the
file and every worker follows within a second, with no restart and no extra round trip on the payment path;
`paygate risk check` validates a file before it is put in place.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path

from runtime.metrics import WorkerMetrics
from workers.domain.risk import NO_RULES, Assessment, RuleSet
from workers.risk import rules_file
from workers.risk.audit import ReloadRecorder
from workers.risk.velocity import Velocity

log = logging.getLogger(__name__)

PHONE_KEY_PURPOSE = "risk-phone/v1"
RELOAD_CHECK_INTERVAL_S = 1.0
Stamp = tuple[int, int, int] | None  # (mtime_ns, size, inode) of the file; None when it cannot be read


def phone_fingerprint(key: bytes, phone_number: str) -> str:
    """HMAC-SHA256 of an E.164 number under the stack's risk-phone key: what is compared and listed, never the
    number itself."""
    return hmac.new(key, phone_number.encode("ascii"), hashlib.sha256).hexdigest()


def mask_phone(phone_number: str) -> str:
    """A number as it may be shown to a person: the country's '+' and the last two digits ("+•••••••••00")."""
    return "+" + "•" * max(0, len(phone_number) - 3) + phone_number[-2:]


class RiskEngine:
    def __init__(
        self,
        path: Path | None,
        velocity: Velocity | None,
        phone_key: bytes,
        metrics: WorkerMetrics | None = None,
        *,
        on_reload: ReloadRecorder | None = None,
    ) -> None:
        """Raises rules_file.RulesError when the file cannot be used: a worker does not start on bad rules."""
        self.velocity = velocity
        self._path = path
        self._phone_key = phone_key
        self._metrics = metrics
        self._on_reload: ReloadRecorder = on_reload or (lambda _outcome, _details: None)
        self._lock = threading.Lock()
        self._stamp = _stamp(path) if path else None
        self._rules = rules_file.load(path) if path else NO_RULES

    def rules(self) -> RuleSet:
        """The rules in force. No file or database work on the request path: the worker's background job calls
        `check_for_changes` every RELOAD_CHECK_INTERVAL_S (docs/risk.md, "Reloading")."""
        return self._rules

    def fingerprint(self, phone_number: str) -> str:
        return phone_fingerprint(self._phone_key, phone_number) if phone_number else ""

    def count(self, assessment: Assessment, method: str) -> None:
        """paygate_risk_decisions_total, paygate_risk_rule_hits_total and the score histogram."""
        if self._metrics is None:
            return
        self._metrics.risk_decisions.labels(assessment.decision.value, method).inc()
        for rule in assessment.reasons:
            self._metrics.risk_rule_hits.labels(rule).inc()
        self._metrics.risk_score.observe(float(assessment.score))

    def check_for_changes(self) -> int:
        """Apply (or refuse) a changed rules file, once per change; 1 when a change was handled, else 0. Run by
        one background thread; the lock keeps a second caller (a test, a CLI) from interleaving."""
        if self._path is None:
            return 0
        with self._lock:
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return 0
            rules, outcome, details = self._read(self._path)
            try:
                self._on_reload(outcome, details)
            except Exception:  # not on record, not applied: the file is looked at again at the next round
                log.exception("risk rules change not recorded in the audit trail; the rules in force stay")
                return 0
            self._stamp = stamp  # tried once per change: a refused file is not re-read (and re-logged) every round
            self._rules = rules
        log.log(
            logging.INFO if outcome == "applied" else logging.ERROR,
            "risk rules reloaded" if outcome == "applied" else "risk rules not reloaded; the rules in force stay",
            extra={"fields": details},
        )
        if self._metrics is not None:
            self._metrics.risk_rule_reloads.labels(outcome).inc()
        return 1

    def _read(self, path: Path) -> tuple[RuleSet, str, dict[str, str]]:
        """The new rules with what the audit trail records of them, or the rules in force and why the file was
        refused. The bytes are read once, so the SHA-256 on record is of exactly what was parsed."""
        try:
            raw = rules_file.read(path)
            rules = rules_file.parse(raw, str(path))
        except rules_file.RulesError as error:
            return self._rules, "refused", {"path": str(path)[:256], "reason": str(error)[:256]}
        details = {"path": str(path)[:256], "sha256": hashlib.sha256(raw).hexdigest(), "rules": str(len(rules.rules))}
        return rules, "applied", details


def _stamp(path: Path) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino
