"""Which series a PromQL expression reads: the metric names of its selectors and their label matchers.

Shared by the dashboard, alert and series tests (tests/deploy). A small tokenizer rather than a full PromQL
parser (docs/decisions.md #125): our expressions are checked by promtool's own parser in test_alerts.py and
test_dashboard.py, so this only has to tell metric names from functions, keywords, grouping labels, strings,
numbers and durations. The tests below pin that on the constructs the dashboard and the rules use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO_ROOT

RULES_DIR = REPO_ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "paygate.json"

# The series issue 11 adds (docs/metrics.md); histograms by their base name.
CONTRACT_SERIES = frozenset(
    {
        "paygate_build_info",
        "paygate_process_cpu_seconds_total",
        "paygate_process_resident_memory_bytes",
        "paygate_process_open_fds",
        "paygate_process_max_fds",
        "paygate_process_start_time_seconds",
        "paygate_process_gc_collections_total",
        "paygate_db_statement_seconds",
        "paygate_db_pool_connections",
        "paygate_redis_command_seconds",
        "paygate_redis_pool_connections",
        "paygate_background_runs_total",
        "paygate_background_run_seconds",
        "paygate_background_lag_seconds",
        "paygate_background_last_success_timestamp_seconds",
    }
)
# Series with a `process` label: the dashboard filters them by $process as well as $instance.
PER_PROCESS_PREFIXES = ("paygate_build_info", "paygate_process_", "paygate_db_", "paygate_redis_")

_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregations may put their grouping clause before the parenthesis (`sum by (le) (...)`), so they are keywords.
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
_KEYWORDS = _GROUPING | _AGGREGATIONS | {"quantile", "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2"}
_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<matchers>\{[^}]*\})
      | (?P<range>\[[^\]]*\])
      | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
      | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<open>\()
      | (?P<close>\))
      | (?P<other>\S)""",
    re.VERBOSE,
)


def selectors(expression: str) -> list[tuple[str, str]]:
    """Every vector selector as (metric name, matcher text without braces), in order of appearance."""
    tokens = [(match.lastgroup, match.group()) for match in _TOKEN.finditer(expression)]
    found: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else (None, "")
        if kind == "name" and text in _GROUPING and following[0] == "open":
            index = _after_closing(tokens, index + 1)  # a label list, not series
            continue
        if kind == "name" and text not in _KEYWORDS and following[0] != "open":
            matchers = following[1][1:-1] if following[0] == "matchers" else ""
            found.append((text, matchers.strip()))
        index += 1
    return found


def _after_closing(tokens: list[tuple[str | None, str]], open_index: int) -> int:
    for index in range(open_index, len(tokens)):
        if tokens[index][0] == "close":
            return index + 1
    raise ValueError("unbalanced parentheses in a grouping clause")


def metric_names(expression: str) -> set[str]:
    return {name for name, _ in selectors(expression)}


def base_name(sample_name: str) -> str:
    """A histogram's samples (_bucket, _count, _sum) by the histogram's name; other names unchanged."""
    return re.sub(r"_(bucket|count|sum)$", "", sample_name)


# -- what the repository's dashboard and rules say ----------------------------------------------------------


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return panels


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def referenced_series() -> set[str]:
    """Metric names the dashboard and the rules read, without recording rules (names with a colon) and ALERTS."""
    expressions = dashboard_expressions() + [rule["expr"] for rule in rules()]
    names = set().union(*(metric_names(expression) for expression in expressions))
    return {name for name in names if ":" not in name and name != "ALERTS"}


def promtool_rules_file(expressions: list[str], directory: Path) -> Path:
    """The expressions as recording rules, for promtool's parser (Grafana's variables replaced by values)."""
    substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}
    records = []
    for number, expression in enumerate(expressions):
        substituted = expression
        for variable, value in substitutions.items():
            substituted = substituted.replace(variable, value)
        records.append({"record": f"dashboard:query_{number}", "expr": re.sub(r"\$\w+", ".*", substituted)})
    path = directory / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    return path


# -- the tokenizer on the constructs in use -------------------------------------------------------------------


def test_selectors_skip_functions_keywords_grouping_labels_and_durations() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{le="0.5", '
        'instance=~"$instance"}[$__rate_interval]))) > 0.25 and on (statement) '
        "sum by (statement) (rate(paygate_db_statement_seconds_count[5m] offset 1h)) > 1e3 "
        "or vector(0) unless time() - max without (job) (up) / ignoring (x) group_left (y) paygate_build_info"
    )
    assert selectors(expression) == [
        ("grpc_server_handling_seconds_bucket", 'le="0.5", instance=~"$instance"'),
        ("paygate_db_statement_seconds_count", ""),
        ("up", ""),
        ("paygate_build_info", ""),
    ]


def test_strings_and_recording_rules() -> None:
    expression = 'label_replace(a:b:rate5m{x="y or z"}, "dst", "$1", "src", "(.*)") * on () group_left c_total'
    assert selectors(expression) == [("a:b:rate5m", 'x="y or z"'), ("c_total", "")]
    assert base_name("paygate_db_statement_seconds_bucket") == "paygate_db_statement_seconds"
    assert base_name("paygate_process_open_fds") == "paygate_process_open_fds"


def test_the_repository_references_every_contract_series() -> None:
    referenced = {base_name(name) for name in referenced_series()}
    assert CONTRACT_SERIES - referenced == set()
