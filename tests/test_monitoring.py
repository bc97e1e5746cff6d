"""The example alert rules: they name metrics the bridge exports, and `promtool` proves them."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from bridge import __version__
from bridge.metrics import DROP_REASONS, Metrics

RULES = Path(__file__).parent.parent / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "alerts_test.yml"


def _exported_names() -> set[str]:
    metrics = Metrics()
    # Labelled metrics export nothing until a label value exists.
    metrics.reconnects.labels(side="ingres")
    metrics.ready.labels(side="amqp", database="")
    metrics.events_caught.labels(database="sales")
    metrics.gap_markers.labels(database="sales")
    metrics.last_event_timestamp.labels(database="sales")
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_every_metric_in_the_alert_rules_is_exported() -> None:
    rules = yaml.safe_load(RULES.read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {
        name for expr in expressions
        for name in re.findall(r"\b(?:dbevent_bridge|process)_\w+", expr)
    }
    assert named, "the rules name no bridge metric"
    assert named <= _exported_names(), named - _exported_names()


def test_process_platform_and_build_metrics_are_exported() -> None:
    registry = Metrics().registry
    assert registry.get_sample_value("dbevent_bridge_build_info", {"version": __version__}) == 1
    start = registry.get_sample_value("process_start_time_seconds")
    assert start is not None
    assert 0 < time.time() - start < 24 * 3600  # this test process's own start
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 0
    assert registry.get_sample_value(
        "python_info", {"implementation": platform.python_implementation(),
                        "major": str(sys.version_info.major), "minor": str(sys.version_info.minor),
                        "patchlevel": str(sys.version_info.micro),
                        "version": platform.python_version()}) == 1


def test_every_drop_reason_is_exported_from_the_start() -> None:
    registry = Metrics().registry
    for reason in DROP_REASONS:
        assert registry.get_sample_value(
            "dbevent_bridge_events_dropped_total", {"reason": reason}) == 0


def test_the_alerts_the_operators_asked_for_exist() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "DbeventBridgeNotReady", "DbeventBridgeSpoolGrowing",
        "DbeventBridgeNoEvents", "DbeventBridgeGapMarker",
    } <= alerts


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian: apt-get install prometheus; .ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    """tests/prometheus/alerts_test.yml: quiet restarts, the first drop of a new series."""
    result = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
