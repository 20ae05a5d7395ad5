"""The alert rules (deploy/prometheus/rules): promtool accepts them, its unit tests (deploy/prometheus/tests) fire
and silence every alert, and every alert links a runbook section that exists in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_series_promql import RULES_DIR, alerts, rules
from tests.support import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
RUNBOOK_BASE = "https://github.com/paygate/paygate/blob/main/docs/operations.md#"
ALERT_SECTION = "## What to do for each alert"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; .ci/run installs it)")
    return found


def run_promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], check=False, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_promtool_check_rules() -> None:
    files = [str(path) for path in sorted(RULES_DIR.glob("*.yml"))]
    checked = run_promtool("check", "rules", *files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@pytest.mark.parametrize("unit_tests", UNIT_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests(unit_tests: Path) -> None:
    tested = run_promtool("test", "rules", str(unit_tests.relative_to(PROMETHEUS_DIR)))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_check_config(tmp_path: Path) -> None:
    """As shipped (rule files under /etc/prometheus, absent here), and with the repository's rules put there."""
    shipped = PROMETHEUS_DIR / "prometheus.yml"
    checked = run_promtool("check", "config", str(shipped))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(shipped.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    with_rules = tmp_path / "prometheus.yml"
    with_rules.write_text(yaml.safe_dump(config))
    checked = run_promtool("check", "config", str(with_rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def _unit_test_cases() -> list[tuple[str, bool]]:
    """(alert name, expects it firing) for every alert_rule_test of every unit-test file."""
    cases = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((case["alertname"], bool(case.get("exp_alerts"))))
    return cases


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = set(_unit_test_cases())
    names = {alert["alert"] for alert in alerts()}
    assert sorted(name for name in names if (name, True) not in cases) == []
    assert sorted(name for name in names if (name, False) not in cases) == []
    assert {name for name, _ in cases} <= names  # no test of an alert that no longer exists


def test_every_alert_has_a_severity_a_summary_and_its_runbook() -> None:
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower(), name


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_anchor_exists_in_the_operations_guide() -> None:
    text = OPERATIONS.read_text()
    assert ALERT_SECTION in text
    section = text.split(ALERT_SECTION, 1)[1]
    section = re.split(r"(?m)^## ", section, maxsplit=1)[0]  # up to the next chapter, if any
    headings = re.findall(r"(?m)^### (.+)$", section)
    anchors = {_github_anchor(heading) for heading in headings}
    missing = sorted(alert["alert"] for alert in alerts() if alert["alert"].lower() not in anchors)
    assert missing == []
    stale = sorted(heading for heading in headings if heading.strip() not in {a["alert"] for a in alerts()})
    assert stale == []  # a section for an alert that no longer exists
