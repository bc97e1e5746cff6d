"""Where the raise → subscriber latency goes: per-event stage times and the tail's breakdown.

Each party stamps an event with `time.time()` (one clock: every process runs on
this machine) as it passes a stage:

- the raiser (simhost): the raise, i.e. the event's text, and the moment the
  simulator wrote its frame to the bridge's socket ("delivered");
- the bridge (bridge_proc, with `--stages`): `StageTrace` wraps the bridge's
  own methods from the outside (nothing in bridge/ knows about it): caught
  (the catcher thread hands it to `_LoopSink.event_caught`), taken by the
  loop (`_Lane.accept`),
  committed to the spool (`Spool.append`), taken by the publisher
  (`Backlog.get`), its batch's frame queued for the socket (`publish_batch`),
  that frame written to the socket (`StreamWriter.write` with the batch's
  first message_id in it), confirmed by the broker (`Backlog.confirmed`);
- the consumer (the driver): its arrival.

`GcPauses` records the cyclic garbage collector's pauses of a process
(`gc.callbacks`), so a slow event can be matched with a pause that overlapped it.
`breakdown` joins it all: the median of each stage over every event, and for
the slowest 1 % the mean time in each stage, the stage that dominated each of
them, and how many overlapped a GC pause or a late raise.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

NAN = math.nan
# The bridge's stamps, in order, after the event's text (see StageTrace).
BRIDGE_STAMPS = ("caught", "loop", "committed", "got", "queued", "written", "confirmed")
# Stage name → (from stamp, to stamp); together they cover raise → arrival.
STAGES: dict[str, tuple[str, str]] = {
    "sim: raise -> written to the bridge's socket": ("raised", "delivered"),
    "catcher: socket -> CaughtEvent (thread, OpenAPI)": ("delivered", "caught"),
    "hand-over: catcher thread -> loop (2 ms batching)": ("caught", "loop"),
    "spool: accepted -> committed": ("loop", "committed"),
    "backlog -> publisher takes it": ("committed", "got"),
    "publisher: taken -> batch frame queued": ("got", "queued"),
    "aiormq writer: queued -> socket write": ("queued", "written"),
    "broker -> consumer's callback": ("written", "arrived"),
}
TAIL_FRACTION = 0.01


class GcPauses:
    """The cyclic GC's pauses in this process: (wall start, seconds, generation, CPU seconds).

    The CPU seconds are the collecting thread's own (time.thread_time): what the
    collection cost, whereas the wall seconds also count any preemption meanwhile.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int, float]] = []
        self._started = (0.0, 0.0, 0.0)

    def install(self) -> GcPauses:
        """Start recording (gc.callbacks); returns self."""
        gc.callbacks.append(self._on_gc)
        return self

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = (time.time(), time.perf_counter(), time.thread_time())
        else:
            wall, t0, cpu0 = self._started
            self.pauses.append((wall, time.perf_counter() - t0, info["generation"],
                                time.thread_time() - cpu0))

    def summary(self) -> dict[str, Any]:
        """Count, total and longest pause (ms), and the count per generation."""
        lengths = [p[1] for p in self.pauses]
        return {"count": len(lengths), "total_ms": sum(lengths) * 1e3,
                "max_ms": max(lengths, default=0.0) * 1e3,
                "by_generation": {str(g): sum(1 for p in self.pauses if p[2] == g)
                                  for g in range(3)},
                "max_ms_by_generation": {str(g): max((p[1] * 1e3 for p in self.pauses
                                                      if p[2] == g), default=0.0)
                                         for g in range(3)},
                "max_cpu_ms_by_generation": {str(g): max((p[3] * 1e3 for p in self.pauses
                                                          if p[2] == g), default=0.0)
                                             for g in range(3)}}


class StageTrace:
    """The bridge's stage stamps per message_id: [text, *BRIDGE_STAMPS] (NaN until seen).
    Installed by wrapping bridge methods from the outside; benchmark only."""

    def __init__(self) -> None:
        self.events: dict[str, list[Any]] = {}
        # message_id → catch time, stamped on the catcher thread until the loop takes it.
        self._caught: dict[str, float] = {}
        # Batches queued for aiormq's writer, oldest first: their message ids.
        self._unwritten: deque[list[str]] = deque()

    def install(self) -> None:
        """Wrap the bridge's stage methods (call before the Bridge is built)."""
        import asyncio

        from bridge import app, confirms
        from bridge.backlog import Backlog
        from bridge.spool import Spool

        events, caught_at = self.events, self._caught
        targets: dict[str, tuple[object, str]] = {
            "event_caught": (app._LoopSink, "event_caught"),
            "accept": (app._Lane, "accept"), "append": (Spool, "append"),
            "get": (Backlog, "get"), "confirmed": (Backlog, "confirmed"),
            "publish_batch": (confirms, "publish_batch"),
            "write": (asyncio.StreamWriter, "write"),
        }
        original: dict[str, Any] = {k: getattr(*where) for k, where in targets.items()}

        def event_caught(sink: Any, event: Any) -> None:
            # On the catcher thread: one dict store is atomic; accept pops it on the loop.
            caught_at[event.message_id] = time.time()
            original["event_caught"](sink, event)

        def accept(lane: Any, batch: list[Any], *args: Any, **kwargs: Any) -> None:
            now = time.time()
            for e in batch:
                text = e.text.decode() if e.text is not None else ""
                events[e.message_id] = [text, caught_at.pop(e.message_id, NAN), now,
                                        NAN, NAN, NAN, NAN, NAN]
            original["accept"](lane, batch, *args, **kwargs)

        def append(spool: Any, batch: Sequence[Any], *args: Any, **kwargs: Any) -> None:
            original["append"](spool, batch, *args, **kwargs)
            self._stamp((e.message_id for e in batch), 3)

        async def get(backlog: Any) -> Any:
            event = await original["get"](backlog)
            if event is not None:
                self._stamp((event.message_id,), 4)
            return event

        async def publish_batch(channel: Any, exchange: str, messages: Any) -> Any:
            result = await original["publish_batch"](channel, exchange, messages)
            ids = [m[2].message_id for m in messages]
            self._stamp(ids, 5)
            self._unwritten.append(ids)
            return result

        def write(writer: Any, data: bytes) -> None:
            original["write"](writer, data)
            # aiormq writes queued frames in order: only the oldest can be this one.
            if self._unwritten and self._unwritten[0][0].encode() in data:
                self._stamp(self._unwritten.popleft(), 6)

        def confirmed(backlog: Any, event: Any) -> None:
            self._stamp((event.message_id,), 7)
            original["confirmed"](backlog, event)

        wrappers = {"event_caught": event_caught, "accept": accept, "append": append,
                    "get": get, "confirmed": confirmed, "publish_batch": publish_batch,
                    "write": write}
        for key, (owner, name) in targets.items():
            setattr(owner, name, wrappers[key])

    def _stamp(self, message_ids: Any, index: int) -> None:
        now = time.time()
        for message_id in message_ids:
            row = self.events.get(message_id)
            if row is not None:
                row[index] = now


def breakdown(arrivals: dict[str, float], bridge: dict[str, list[Any]],
              sim: dict[str, Any], gc_pauses: dict[str, list[list[float]]]) -> dict[str, Any]:
    """The stage table: `arrivals` by message_id, the bridge's and the raiser's stamps,
    each process's GC pauses (wall start, seconds, generation)."""
    delivered = dict(zip(sim["stamps"], sim["delivered"], strict=False))
    late = dict(zip(sim["stamps"], sim["late"], strict=False))
    rows: list[dict[str, float]] = []
    for message_id, stamps in bridge.items():
        text = stamps[0]
        if message_id not in arrivals or text not in delivered:
            continue
        row = {"raised": float(text), "delivered": delivered[text], "late": late[text],
               "arrived": arrivals[message_id]}
        row.update(zip(BRIDGE_STAMPS, stamps[1:], strict=True))
        rows.append(row)
    if not rows:
        return {"events": 0}
    rows.sort(key=lambda r: r["arrived"] - r["raised"])
    tail = rows[-max(1, math.ceil(len(rows) * TAIL_FRACTION)):]

    def spans(r: dict[str, float]) -> dict[str, float]:
        return {name: (r[b] - r[a]) * 1e3 for name, (a, b) in STAGES.items()}

    all_spans = [spans(r) for r in rows]
    tail_spans = all_spans[-len(tail):]
    out: dict[str, Any] = {
        "events": len(rows), "tail_events": len(tail),
        "tail_from_ms": (tail[0]["arrived"] - tail[0]["raised"]) * 1e3,
        "stages": {}, "dominant": {},
    }
    tail_total = sum((r["arrived"] - r["raised"]) * 1e3 for r in tail) / len(tail)
    for name in STAGES:
        values = [s[name] for s in all_spans if not math.isnan(s[name])]
        tail_values = [s[name] for s in tail_spans if not math.isnan(s[name])]
        mean_tail = statistics.fmean(tail_values) if tail_values else NAN
        out["stages"][name] = {
            "median_ms": statistics.median(values) if values else NAN,
            "p99_ms": _quantile(sorted(values), 0.99) if values else NAN,
            "tail_mean_ms": mean_tail, "tail_share": mean_tail / tail_total,
        }
    for s in tail_spans:
        top = max(STAGES, key=lambda n: -1.0 if math.isnan(s[n]) else s[n])
        out["dominant"][top] = out["dominant"].get(top, 0) + 1
    # The bridge's own part of each event's latency, broker and consumer left out.
    own = sorted((r["written"] - r["raised"]) * 1e3 for r in rows
                 if not math.isnan(r["written"]))
    out["raise_to_socket_ms"] = {"p50": _quantile(own, 0.5), "p99": _quantile(own, 0.99),
                                 "max": own[-1] if own else NAN}
    out["tail_confirm_ms"] = statistics.fmean(
        (r["confirmed"] - r["written"]) * 1e3 for r in tail)
    out["tail_raise_late_ms"] = statistics.fmean(r["late"] * 1e3 for r in tail)
    out["raise_late_p99_ms"] = _quantile(sorted(r["late"] * 1e3 for r in rows), 0.99)
    # A GC pause of a process overlapping the window that process had the event in.
    windows = {"simhost": ("raised", "delivered"), "bridge": ("delivered", "written"),
               "driver": ("written", "arrived")}
    out["tail_in_gc_pause"] = {
        who: sum(1 for r in tail if _in_gc(gc_pauses.get(who, []), r[a], r[b]) > 0)
        for who, (a, b) in windows.items()}
    out["tail_gc_ms"] = {
        who: statistics.fmean(_in_gc(gc_pauses.get(who, []), r[a], r[b]) for r in tail) * 1e3
        for who, (a, b) in windows.items()}
    return out


def _in_gc(pauses: list[list[float]], start: float, end: float) -> float:
    """Seconds of the window [start, end] that a GC pause of the process took."""
    return sum(max(0.0, min(end, p[0] + p[1]) - max(start, p[0])) for p in pauses)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return NAN
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def render(b: dict[str, Any], row: str) -> list[str]:
    """The breakdown as table lines (`row`: the table's format with 4 columns)."""
    if not b.get("events"):
        return ["   (no stage breakdown: no event joined)"]
    lines = [(f"   stages of {b['events']} events; tail = the slowest {b['tail_events']}"
              f" (>= {b['tail_from_ms']:.1f} ms)"),
             row.format("stage (ms): median / p99, tail mean", "all", "tail", "share")]
    for name, s in b["stages"].items():
        lines.append(row.format(name[:44], f"{s['median_ms']:.2f}/{s['p99_ms']:.1f}",
                                f"{s['tail_mean_ms']:.2f}", f"{s['tail_share']:.2f}"))
    own = b["raise_to_socket_ms"]
    lines.append(row.format("raise -> bridge's socket write: p50/p99/max",
                            f"{own['p50']:.1f}/{own['p99']:.1f}/{own['max']:.1f}", "", ""))
    dominant = ", ".join(f"{n.split(':')[0]} {c}" for n, c in
                         sorted(b["dominant"].items(), key=lambda kv: -kv[1]))
    lines.append(f"   tail's longest stage: {dominant}")
    lines.append(f"   tail: written -> confirmed (off the path) {b['tail_confirm_ms']:.1f} ms;"
                 f" raise late {b['tail_raise_late_ms']:.2f} ms"
                 f" (all: p99 {b['raise_late_p99_ms']:.2f})")
    lines.append("   tail in a GC pause: " + ", ".join(
        f"{k} {v} ({b['tail_gc_ms'][k]:.2f} ms each)" for k, v in b["tail_in_gc_pause"].items()))
    return lines
