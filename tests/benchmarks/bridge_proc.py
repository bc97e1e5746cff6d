"""The bridge in a child process of its own: `python -m tests.benchmarks.bridge_proc JSON`.

JSON is the nested settings overrides (as tests/integration/conftest.py builds
them). The process prints a ready line once every event is registered, then
answers `wait_confirmed`, `wait_caught`, `counts` and `stages` (the stage
stamps with BENCH_STAGES=1, and the GC pauses: see stages.py) until `quit`,
and shuts the bridge down as the service does.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import sys
from typing import Any

from bridge.sim.build import ensure_ii_system

os.environ["II_SYSTEM"] = str(ensure_ii_system())

from bridge.app import Bridge, run_service
from bridge.logs import configure_logging
from bridge.settings import load_settings
from tests.benchmarks.child import reply, serve_commands, wait_count
from tests.benchmarks.stages import GcPauses, StageTrace


def counter(value: Any) -> float:
    """The current value of a prometheus counter, summed over its labels (databases)."""
    return float(sum(sample.value for family in value.collect() for sample in family.samples
                     if sample.name.endswith("_total")))


async def main(overrides: dict[str, Any]) -> None:
    """Run one bridge until the driver says quit."""
    configure_logging("WARNING", "console")
    # Experiments only (never set by bench.py): a GIL switch interval, extra settings.
    if "BENCH_SWITCH_INTERVAL" in os.environ:
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    for section, values in json.loads(os.environ.get("BENCH_EXTRA_SETTINGS", "{}")).items():
        overrides.setdefault(section, {}).update(values)
    # Stage stamps per event (bench --stages) and GC pauses: see stages.py.
    trace = StageTrace() if os.environ.get("BENCH_STAGES") else None
    if trace is not None:
        trace.install()
    pauses = GcPauses().install()
    bridge = Bridge(load_settings(overrides))
    await bridge.start()
    # As this bridge's service entry point does once it runs (a --reference
    # bridge from before it did not): the bridge's own behaviour, not the harness's.
    if "gc.freeze()" in inspect.getsource(run_service):
        gc.freeze()
    try:
        if not await asyncio.to_thread(bridge.wait_registered, 60.0):
            reply({"ok": False, "error": "events not registered within 60 s"})
            return
        reply({"ok": True, "pid": os.getpid()})
        metrics = bridge.metrics

        async def wait_confirmed(command: dict[str, Any]) -> dict[str, Any]:
            t = await wait_count(lambda: counter(metrics.events_confirmed),
                                 int(command["count"]), float(command["timeout"]))
            return {"ok": t is not None, "t": t, "confirmed": counter(metrics.events_confirmed)}

        async def wait_caught(command: dict[str, Any]) -> dict[str, Any]:
            t = await wait_count(lambda: counter(metrics.events_caught),
                                 int(command["count"]), float(command["timeout"]))
            return {"ok": t is not None, "t": t, "caught": counter(metrics.events_caught)}

        async def counts(command: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True, "caught": counter(metrics.events_caught),
                    "confirmed": counter(metrics.events_confirmed),
                    "published": counter(metrics.events_published)}

        async def stages(command: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True, "events": trace.events if trace else {},
                    "gc": pauses.pauses, "gc_summary": pauses.summary()}

        await serve_commands({"wait_confirmed": wait_confirmed, "wait_caught": wait_caught,
                              "counts": counts, "stages": stages})
    finally:
        await bridge.shutdown()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
