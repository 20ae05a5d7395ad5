"""The Grafana dashboard (deploy/grafana/dashboards/paygate.json): valid, filterable by instance and process,
with the rows docs/operations.md describes, and queries promtool's PromQL parser accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_series_promql import (
    DASHBOARD,
    PER_PROCESS_PREFIXES,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    promtool_rules_file,
    selectors,
)

ROWS = [
    "Overview",
    "Channels",
    "Ledger",
    "Events and outbox",
    "Risk and security",
    "Background jobs",
    "Datastores",
    "Processes",
]
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# The JSON model Grafana 10.4-11 writes; provisioning loads it as is (deploy/grafana/provisioning).
SCHEMA_VERSION = 39
PANEL_TYPES = {"row", "stat", "timeseries", "bargauge", "table"}


def test_it_is_one_dashboard_with_a_stable_uid_and_schema() -> None:
    model = dashboard()
    assert model["uid"] == "paygate-overview" and model["title"] == "Paygate"
    assert model["schemaVersion"] == SCHEMA_VERSION
    assert model["id"] is None  # provisioning assigns it


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    occupied: dict[tuple[int, int], int] = {}
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"panels {occupied.get((x, y))} and {panel['id']} overlap"
                occupied[(x, y)] = panel["id"]


def test_the_rows_of_the_runbook_in_order() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows == ROWS


def test_every_query_uses_the_datasource_variable() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_instance_and_process_variables_filter_every_selector() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert {"instance", "process"} <= variables.keys()
    for name in ("instance", "process"):
        assert variables[name]["multi"] and variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    for name, variable in variables.items():
        if variable["type"] == "query" and name != "instance":
            assert '$instance"' in variable["definition"], name
    unfiltered = []
    for expression in dashboard_expressions():
        for metric, matchers in selectors(expression):
            wanted = ['instance=~"$instance"']
            if metric.startswith(PER_PROCESS_PREFIXES):
                wanted.append('process=~"$process"')
            if any(matcher not in matchers for matcher in wanted):
                unfiltered.append(f"{metric}{{{matchers}}}")
    assert unfiltered == []


def test_the_panels_the_issue_asks_for() -> None:
    expressions = "\n".join(dashboard_expressions())
    titles = {panel["title"] for panel in dashboard_panels()}
    assert "Provider-call success ratio by channel" in titles and "sum by (channel)" in expressions
    assert "paygate_ledger_retries_total" in expressions
    assert "Outbox lag" in titles and "paygate_background_lag_seconds" in expressions
    for series in ("cpu_seconds_total", "resident_memory_bytes", "open_fds", "gc_collections_total"):
        assert f"paygate_process_{series}" in expressions
    assert "paygate_build_info" in expressions


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; .ci/run installs it)")
    rules_file = promtool_rules_file(dashboard_expressions(), tmp_path)
    command = [promtool, "check", "rules", str(rules_file)]
    checked = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(dashboard_expressions())} rules found" in checked.stdout


def test_the_file_is_what_provisioning_mounts() -> None:
    provisioning = (DASHBOARD.parent.parent / "provisioning" / "dashboards" / "paygate.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provisioning
