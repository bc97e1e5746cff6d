"""The example alert rules only name metrics the bridge really exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from bridge.metrics import Metrics

RULES = Path(__file__).parent.parent / "config" / "prometheus" / "alerts.yml"


def _exported_names() -> set[str]:
    metrics = Metrics()
    # Labelled metrics export nothing until a label value exists.
    metrics.events_dropped.labels(reason="spool_full")
    metrics.reconnects.labels(side="ingres")
    metrics.ready.labels(side="amqp")
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_every_metric_in_the_alert_rules_is_exported() -> None:
    rules = yaml.safe_load(RULES.read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {name for expr in expressions for name in re.findall(r"dbevent_bridge_\w+", expr)}
    assert named, "the rules name no bridge metric"
    assert named <= _exported_names(), named - _exported_names()


def test_the_alerts_the_operators_asked_for_exist() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "DbeventBridgeNotReady", "DbeventBridgeSpoolGrowing",
        "DbeventBridgeNoEvents", "DbeventBridgeGapMarker",
    } <= alerts
