"""Prometheus metrics of one bridge instance.

Every component takes a `Metrics` object instead of touching a global registry,
so that tests (and several bridges in one process) each count on their own.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from bridge import __version__

# Raise-to-confirm latency buckets, in seconds: sub-millisecond to a minute,
# because a broker outage legitimately stretches latency to the outage length.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


# Every reason an event is dropped for. Their series exist from the start (at 0),
# so that the first drop shows as an increase, not as a new series.
DROP_REASONS = ("spool_full", "spool_error", "shutdown", "routing_key_too_long", "bad_event")


class Metrics:
    """The bridge's counters, gauges and histograms, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_caught = Counter(
            "dbevent_bridge_events_caught", "DBEvents caught from Ingres, by database.",
            ["database"], registry=r,
        )
        self.events_published = Counter(
            "dbevent_bridge_events_published", "Publishes sent to RabbitMQ (retries included).",
            registry=r,
        )
        self.events_confirmed = Counter(
            "dbevent_bridge_events_confirmed", "Events confirmed (acked) by RabbitMQ.", registry=r
        )
        self.events_returned = Counter(
            "dbevent_bridge_events_returned", "Events returned by RabbitMQ as unroutable.",
            registry=r,
        )
        self.events_republished = Counter(
            "dbevent_bridge_events_republished",
            "Events published again after a nack, a timeout or a lost connection.", registry=r,
        )
        self.events_dropped = Counter(
            "dbevent_bridge_events_dropped",
            "Events dropped on purpose, by reason (spool policy, bad routing key).",
            ["reason"], registry=r,
        )
        self.queue_depth = Gauge(
            "dbevent_bridge_queue_depth",
            "Events (and gap markers) held in memory, waiting to be published.", registry=r,
        )
        self.spool_depth = Gauge(
            "dbevent_bridge_spool_depth",
            "Events and gap markers in the durable spool, not yet confirmed.", registry=r,
        )
        self.spool_bytes = Gauge(
            "dbevent_bridge_spool_bytes", "Size of the spool's events and gap markers in bytes.",
            registry=r,
        )
        self.reconnects = Counter(
            "dbevent_bridge_reconnects", "Connections re-established, by side.", ["side"],
            registry=r,
        )
        self.gap_markers = Counter(
            "dbevent_bridge_gap_markers",
            "Gap markers published (confirmed by the broker) after an Ingres outage or a "
            "restart, by database.", ["database"],
            registry=r,
        )
        self.last_event_timestamp = Gauge(
            "dbevent_bridge_last_event_timestamp_seconds",
            "Unix time at which the last DBEvent of a database was caught.", ["database"],
            registry=r,
        )
        self.ready = Gauge(
            "dbevent_bridge_ready",
            "1 while a side is ready (ingres: the database's session registered; amqp: "
            "connected), else 0.", ["side", "database"], registry=r,
        )
        self.ha_active = Gauge(
            "dbevent_bridge_ha_active",
            "Active/standby mode: 1 while this bridge holds its group's lease and publishes, "
            "0 while it stands by (always 1 with ha.mode=off).", registry=r,
        )
        self.ha_held = Gauge(
            "dbevent_bridge_ha_held_events",
            "Events a standby bridge caught and keeps until the active one has published them.",
            registry=r,
        )
        for reason in DROP_REASONS:
            self.events_dropped.labels(reason=reason)
        # process_* (CPU, memory, open files, start time) and python_info, as
        # every Prometheus client exports them by default, in our own registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Info(
            "dbevent_bridge_build", "The running dbevent-bridge version.", registry=r
        )
        self.build_info.info({"version": __version__})
        self.raise_to_confirm = Histogram(
            "dbevent_bridge_raise_to_confirm_seconds",
            "Time from RAISE DBEVENT (server time stamp) to the broker's confirm.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )

