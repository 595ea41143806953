"""The operator's side of observability: the Grafana dashboard and the
Prometheus alerting rules under deploy/ are checked against the metrics the
real server exports, and the rules by Prometheus' own `promtool` (installed
by `make system-tools`), their alerts by its rule unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Iterator, List, Set

import pytest
import yaml

from conftest import COMPONENTS_DIR, REPO_ROOT, running_server

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "flyte-connect.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "flyte-connect-alerts.yaml"
ALERT_TESTS = REPO_ROOT / "tests" / "prometheus" / "alerts.test.yaml"

METRIC_NAME = re.compile(r"\bflyte_connector_[a-z0-9_]+")
# Series a histogram or summary family exports beside its name.
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_panels() -> Iterator[dict]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> List[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def alert_queries() -> List[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def family(series: str, exported: Set[str]) -> str:
    """The metric family a series name belongs to."""
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in exported:
            return series[: -len(suffix)]
    return series


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Set[str]:
    """Every metric family the real server describes on /metrics right after
    start, before any call has recorded a sample."""
    workdir = tmp_path_factory.mktemp("metrics")
    plugins = workdir / "plugins"
    plugins.mkdir()
    shutil.copy(COMPONENTS_DIR / "echo.wasm", plugins / "echo.wasm")
    with running_server(plugins, workdir) as server:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}


def test_the_server_describes_every_metric_before_its_first_sample(exported):
    # Families with labels have no series until a call records one; their
    # HELP lines are there from the start, so a dashboard's metric browser
    # and this test see them.
    for name in (
        "flyte_connector_requests_failure_total",
        "flyte_connector_request_duration_seconds",
        "flyte_connector_outbound_tls_failures_total",
        "flyte_connector_ssh_operations_total",
        "flyte_connector_storage_transfers_total",
        "flyte_connector_reloads_total",
        "flyte_connector_calls_queue_capacity",
    ):
        assert name in exported, name


@pytest.mark.parametrize("where, queries", [("dashboard", dashboard_queries), ("alerts", alert_queries)])
def test_every_metric_a_query_names_is_one_the_server_exports(exported, where, queries):
    named = {family(name, exported) for query in queries() for name in METRIC_NAME.findall(query)}
    assert named, f"the {where} name no metrics"
    assert named <= exported, f"the {where} name metrics the server does not export: {sorted(named - exported)}"


def test_the_dashboard_loads_as_is():
    dashboard = json.loads(DASHBOARD.read_text())
    # Imported into any Grafana: the data source is a variable, not a uid
    # of one installation.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        position = panel["gridPos"]
        assert 0 <= position["x"] and position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
    titles = {p["title"] for p in panels}
    # What the issue asks an on-call engineer can see.
    for title in (
        "Request rate by operation",
        "Errors by code",
        "Latency by operation",
        "Calls in flight and queued",
        "Instance starts",
        "Outbound HTTP requests by host",
        "TLS failures by host",
        "Reloads by outcome",
        "Memory budget",
    ):
        assert title in titles, title


def promtool(*args: str, cwd: Path = REPO_ROOT) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make system-tools` installs Debian's prometheus package"
    run = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_alerting_rules_are_valid_prometheus_rules():
    out = promtool("check", "rules", str(ALERTS))
    names = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert f"SUCCESS: {len(names)} rules found" in out
    # The failure modes an operator must know about.
    assert {
        "FlyteConnectHighErrorRatio",
        "FlyteConnectQueueNearFull",
        "FlyteConnectReloadFailed",
        "FlyteConnectTlsFailures",
    } <= names


def test_each_alert_fires_on_trouble_and_not_on_health():
    # tests/prometheus/alerts.test.yaml: synthetic series per alert.
    out = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert "SUCCESS" in out
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    rules = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert tested == rules, f"alerts without a rule test: {sorted(rules - tested)}"
