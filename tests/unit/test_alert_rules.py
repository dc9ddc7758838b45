"""The alert rules and the dashboard speak of metrics the code exports, cover what operators
must hear about, and are valid: `promtool` checks them and runs their unit tests
(deploy/prometheus/alerts.test.yml) when it is installed; without it, their shape and the
balance of every expression are checked here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "jicm-dashboard.json"
METRIC = re.compile(r"\bjicm_[a-z_]+\b")
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")

# What the README and the issue ask operators to be told about.
MUST_ALERT_ON = {
    "jicm_scheduler_heartbeat_age_seconds", "jicm_scheduler_lag_seconds",
    "jicm_scheduler_held_back_oldest_seconds", "jicm_scheduler_held_back_switches_by_reason",
    "jicm_queue_messages", "jicm_mails_failed_total", "jicm_privacy_requests_overdue",
    "jicm_outbox_oldest_event_age_seconds",
}


def exported_metrics() -> set[str]:
    """Every metric name the code declares, with the series names Prometheus derives."""
    names = set()
    for package in ("shared", "services", "gateway"):
        for source in (REPO / package).rglob("*.py"):
            names.update(re.findall(r"\"(jicm_[a-z_]+)\"", source.read_text()))
    return {name + suffix for name in names for suffix in SUFFIXES}


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def balanced(expr: str) -> bool:
    """Brackets pair up and quotes close (outside quoted strings)."""
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], None
    for char in expr:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and quote is None


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_rule_names_its_severity_and_tells_what_to_do(rule):
    assert re.fullmatch(r"Jicm[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert balanced(rule["expr"]), rule["expr"]


def test_rules_and_panels_speak_only_of_metrics_the_code_exports():
    known = exported_metrics()
    used = {name for expr in [rule["expr"] for rule in rules()] + dashboard_exprs()
            for name in METRIC.findall(expr)}
    assert used - known == set()


def test_the_rules_cover_what_operators_must_hear_about():
    alerted = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert alerted >= MUST_ALERT_ON


def test_the_dashboard_shows_everything_that_alerts():
    shown = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert shown >= MUST_ALERT_ON
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all(balanced(expr) for expr in dashboard_exprs())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", str(RULE_TESTS)],
                            capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
