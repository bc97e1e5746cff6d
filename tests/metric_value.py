"""Reading one of the bridge's metrics in a test, by its attribute name on `Metrics`."""

from __future__ import annotations

from bridge.metrics import Metrics


def metric_value(metrics: Metrics, name: str, **labels: str) -> float:
    """The current value of one exported sample, e.g. `metric_value(m, "events_caught")`.

    `name` is the attribute name; counters are read from their `_total` sample.
    A labelled metric needs its labels. Missing samples read as 0.
    """
    metric = getattr(metrics, name)
    sample = metric._name + ("_total" if metric._type == "counter" else "")
    found = metrics.registry.get_sample_value(sample, labels)
    return 0.0 if found is None else found
