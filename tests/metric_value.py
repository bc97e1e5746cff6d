"""Reading one of the bridge's metrics in a test, by its attribute name on `Metrics`."""

from __future__ import annotations

from bridge.metrics import Metrics


def metric_value(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of the exported samples whose labels include `labels`, e.g. `events_caught`.

    `name` is the attribute name; counters are read from their `_total` sample.
    Without labels, a labelled metric is summed over all its series (every
    database's events_caught, say). Missing samples read as 0.
    """
    metric = getattr(metrics, name)
    sample = metric._name + ("_total" if metric._type == "counter" else "")
    return sum(
        found.value
        for family in metrics.registry.collect()
        for found in family.samples
        if found.name == sample and labels.items() <= found.labels.items()
    )
