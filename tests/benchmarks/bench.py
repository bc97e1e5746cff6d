"""One command for every benchmark: `.venv/bin/python -m tests.benchmarks.bench [--quick]`.

Pipeline under test: simulator + raiser (child `simhost`) → bridge (child
`bridge_proc`, its own process so its CPU and memory are its own) → RabbitMQ.
Baselines: the raw aio-pika ceiling (child `rawpub`), the seed design
(child `seed_catcher`) and, with `--reference GIT_REF`, the bridge as it was at
that commit (its `bridge/` from `git archive`, same harness), so "no worse
than before" is a ratio taken in one run. Each figure is the median of
`--reps` runs; the rows of one section run side by side, interleaved, in every
repetition. The table, and each goal of issue 15 with its figure and whether it
is met, are printed and written as JSON (`--out`). Needs the broker at `--amqp`
(default amqp://guest:guest@127.0.0.1:5672/); never asserts anything: a goal
not met is reported, not failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika

from tests.benchmarks import stages
from tests.benchmarks.child import cpu_seconds, memory_mb
from tests.benchmarks.simhost import event_name

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

Row = dict[str, Any]
# A reply line may carry every event's stage stamps (--stages): megabytes.
_REPLY_LIMIT = 256 << 20
# The driver's own GC pauses: its consumer stamps the arrivals (stages.py).
DRIVER_GC = stages.GcPauses()


class Child:
    """A benchmark child process that answers JSON commands (see child.py)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.first: dict[str, Any] = {}

    @classmethod
    async def start(cls, ctx: Context, module: str, *args: str, within: float = 90.0,
                    env: dict[str, str] | None = None) -> Child:
        """Start `python -m module args`; wait for its first (ready) line."""
        log = (ctx.workdir / f"{module.rsplit('.', 1)[-1]}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, cwd=ctx.workdir, env=env or ctx.child_env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            limit=_REPLY_LIMIT,
        )
        log.close()
        child = cls(proc, module)
        child.first = await child._read(within)
        if not child.first.get("ok"):
            await child.kill()
            raise RuntimeError(f"{module} did not start: {child.first}")
        return child

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    async def _read(self, within: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            raise RuntimeError(f"{self.name} exited (status {await self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def request(self, op: str, within: float = 600.0, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read(within)

    async def stop(self) -> None:
        """Ask it to quit; kill it if it does not within 30 s."""
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request("quit", within=30.0)
            try:
                await asyncio.wait_for(self.proc.wait(), 30.0)
            except TimeoutError:
                await self.kill()

    async def kill(self) -> None:
        """Kill it now."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class Proxy:
    """A TCP relay to the broker that can be cut and restored (the broker "goes away")."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> int:
        """Listen (on the same port as before, once known)."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        """Close every relayed connection and stop listening."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class Context:
    """What every scenario shares: the broker, the simulator host, a work folder."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.url: str = args.amqp
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env["BRIDGE_SECRETS_DIR"] = str(workdir / "no-secrets")
        env["PYTHONPATH"] = str(ROOT)
        self.child_env = env
        # The reference bridge: its own `bridge` package first on the path.
        self.ref_env: dict[str, str] | None = None
        if args.reference:
            ref = workdir / "reference"
            ref.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.reference, "bridge"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(ref)], input=archive, check=True)
            self.ref_env = {**env, "PYTHONPATH": f"{ref}{os.pathsep}{ROOT}"}
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.sim: Child | None = None
        self.target = ""

    async def open(self) -> None:
        """Connect to the broker and start the simulator host."""
        self.connection = await aio_pika.connect(self.url)
        self.sim = await Child.start(self, "tests.benchmarks.simhost")
        self.target = f"@127.0.0.1,tcp_ip,{self.sim.first['port']}[ingres,x]::demodb"

    async def close(self) -> None:
        """Stop the simulator host and close the broker connection."""
        if self.sim is not None:
            await self.sim.stop()
        if self.connection is not None:
            await self.connection.close()

    async def exchange(self) -> tuple[str, aio_pika.abc.AbstractQueue,
                                      aio_pika.abc.AbstractChannel]:
        """A fresh topic exchange with an exclusive queue bound to '#'."""
        assert self.connection is not None
        name = f"bench.{uuid.uuid4().hex[:10]}"
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="#")
        return name, queue, channel

    async def drop_exchange(self, name: str, channel: aio_pika.abc.AbstractChannel) -> None:
        """Delete the exchange and its queue (closing the channel drops the queue)."""
        with contextlib.suppress(Exception):
            await channel.exchange_delete(name)
        with contextlib.suppress(Exception):
            await channel.close()

    def bridge_overrides(self, exchange: str, names: int, spool: bool, url: str | None = None,
                         max_events: int | None = None) -> dict[str, Any]:
        """Settings of a benchmark bridge (http off, spool in the work folder)."""
        spool_path = self.workdir / f"spool-{uuid.uuid4().hex[:8]}.db"
        overrides: dict[str, Any] = {
            "ingres": {"target": self.target, "events": [event_name(i) for i in range(names)]},
            "amqp": {"url": url or self.url, "exchange": exchange},
            "spool": {"enabled": spool, "path": str(spool_path)},
            "http": {"listen": "off"},
            "log": {"level": "WARNING"},
        }
        if max_events is not None:
            overrides["queue"] = {"max_events": max_events}
        return overrides

    async def start_bridge(self, overrides: dict[str, Any], ref: bool = False,
                           stages: bool = False) -> Child:
        """The bridge (`ref`: the reference commit's) in a child process, registered and ready;
        `stages`: it stamps each event at each stage (stages.py)."""
        env = self.ref_env if ref else self.child_env
        if stages:
            env = {**(env or self.child_env), "BENCH_STAGES": "1"}
        return await Child.start(self, "tests.benchmarks.bridge_proc", json.dumps(overrides),
                                 env=env)

    async def start_seed(self, exchange: str, names: int) -> Child:
        """The seed design in a child process, registered and ready."""
        config = {"target": self.target, "url": self.url, "exchange": exchange,
                  "events": [event_name(i) for i in range(names)]}
        return await Child.start(self, "tests.benchmarks.seed_catcher", json.dumps(config))


# -- scenarios --------------------------------------------------------------------------


async def raiser_alone(ctx: Context, count: int, text: int) -> Row:
    """How fast the raiser alone raises `count` events (to a session that only drains)."""
    assert ctx.sim is not None
    result = await ctx.sim.request("raiser_alone", count=count, text=text)
    return {"events_per_s": count / (result["t1"] - result["t0"])}


async def raw_ceiling(ctx: Context, count: int, names: int, text: int,
                      windows: list[int]) -> Row:
    """The bare aio-pika publisher at its best window (events/s, CPU µs/event)."""
    name, _queue, channel = await ctx.exchange()
    config = {"url": ctx.url, "exchange": name, "count": count, "names": names,
              "text": text, "windows": windows}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.benchmarks.rawpub", json.dumps(config),
            cwd=ctx.workdir, env=ctx.child_env, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        # Each window publishes into the same queue; purge between is not needed for rates.
    finally:
        await ctx.drop_exchange(name, channel)
    best = min(lines, key=lambda r: r["elapsed"])
    return {"events_per_s": count / best["elapsed"], "window": str(best["window"]),
            "cpu_us_per_event": best["cpu"] / count * 1e6,
            "by_window": {str(r["window"]): round(count / r["elapsed"]) for r in lines}}


async def bridge_burst(ctx: Context, count: int, names: int, text: int, spool: bool,
                       profile: str | None = None, ref: bool = False) -> Row:
    """RAISE → confirmed for a burst of `count` events through a bridge process."""
    assert ctx.sim is not None
    name, _queue, channel = await ctx.exchange()
    bridge = await ctx.start_bridge(ctx.bridge_overrides(name, names, spool), ref=ref)
    spy = _py_spy(bridge.pid, profile) if profile else None
    try:
        cpu0 = cpu_seconds(bridge.pid)
        waiter = asyncio.create_task(
            bridge.request("wait_confirmed", count=count, timeout=600.0))
        burst = await ctx.sim.request("burst", count=count, names=names, text=text)
        done = await waiter
        cpu = cpu_seconds(bridge.pid) - cpu0
        memory = memory_mb(bridge.pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait()
        await bridge.stop()
        await ctx.drop_exchange(name, channel)
    if not done["ok"]:
        raise RuntimeError(f"bridge confirmed {done['confirmed']} of {count}")
    elapsed = done["t"] - burst["t0"]
    return {"events_per_s": count / elapsed, "cpu_us_per_event": cpu / count * 1e6,
            "cpu_share": cpu / elapsed, "rss_mb": memory["rss_mb"],
            "raiser_s": burst["t1"] - burst["t0"], "sim_dropped": burst["dropped"]}


def _py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--rate", "250", "--nonblocking",
         "--threads", "--format", "raw", "--output", out,
         *os.environ.get("BENCH_PYSPY_ARGS", "").split()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def latency(ctx: Context, catcher: str, rate: float, seconds: float,
                  profile: str | None = None) -> Row:
    """Raise → delivered to a consumer at `rate` events/s: p50, p99, max in ms."""
    assert ctx.sim is not None
    name, queue, channel = await ctx.exchange()
    arrivals: list[tuple[float, bytes]] = []
    arrived_ids: dict[str, float] = {}

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.time()
        arrivals.append((now, message.body))
        arrived_ids[message.message_id or ""] = now

    await queue.consume(on_message, no_ack=True)
    traced = ctx.args.stages and catcher in ("ours", "ref")
    if catcher in ("ours", "ref"):
        proc = await ctx.start_bridge(ctx.bridge_overrides(name, 1, spool=True),
                                      ref=catcher == "ref", stages=traced)
    else:
        proc = await ctx.start_seed(name, 1)
    spy = _py_spy(proc.pid, profile) if profile else None
    extra: Row = {"loadavg_before": os.getloadavg()[0]}
    try:
        cpu0 = cpu_seconds(proc.pid)
        result = await ctx.sim.request("paced", rate=rate, seconds=seconds, trace=traced)
        await _settle(arrivals, result["raised"])
        cpu = cpu_seconds(proc.pid) - cpu0
        if catcher != "seed":
            recorded = await proc.request("stages")
            extra["bridge_gc"] = recorded["gc_summary"]
            if traced:
                pauses = {"simhost": result["trace"]["gc"], "bridge": recorded["gc"],
                          "driver": DRIVER_GC.pauses}
                extra["stages"] = stages.breakdown(arrived_ids, recorded["events"],
                                                   result["trace"], pauses)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        await proc.stop()
        await ctx.drop_exchange(name, channel)
    return {**_latency_row(arrivals, result["raised"], cpu), **extra,
            "loadavg_1min": os.getloadavg()[0]}


def _latency_row(arrivals: list[tuple[float, bytes]], raised: int, cpu: float) -> Row:
    """p50/p99/max of arrival - the time in each body's text; CPU per message received."""
    delays = sorted(arrived - float(json.loads(body)["text"]) for arrived, body in arrivals)
    if not delays:
        return {"received": 0, "raised": raised}
    return {"p50_ms": _quantile(delays, 0.50) * 1e3, "p99_ms": _quantile(delays, 0.99) * 1e3,
            "max_ms": delays[-1] * 1e3, "received": len(delays), "raised": raised,
            "cpu_us_per_event": cpu / len(delays) * 1e6}


async def raw_steady(ctx: Context, rate: float, seconds: float) -> Row:
    """The bare aio-pika publisher at a steady rate: publish → consumer, CPU per message."""
    name, queue, channel = await ctx.exchange()
    arrivals: list[tuple[float, bytes]] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrivals.append((time.time(), message.body))

    await queue.consume(on_message, no_ack=True)
    config = {"url": ctx.url, "exchange": name, "rate": rate, "seconds": seconds}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.benchmarks.rawpub", json.dumps(config),
            cwd=ctx.workdir, env=ctx.child_env, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        result = json.loads(out.decode().splitlines()[-1])
        await _settle(arrivals, result["sent"])
    finally:
        await ctx.drop_exchange(name, channel)
    return {**_latency_row(arrivals, result["sent"], result["cpu"]),
            "loadavg_1min": os.getloadavg()[0]}


async def _settle(arrivals: list[tuple[float, bytes]], expected: int) -> None:
    """Wait until `expected` messages arrived, at most 30 s, or 3 s without a new one."""
    deadline = time.monotonic() + 30.0
    seen, last_progress = len(arrivals), time.monotonic()
    while len(arrivals) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if len(arrivals) != seen:
            seen, last_progress = len(arrivals), time.monotonic()
        elif time.monotonic() - last_progress > 3.0:
            return


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def idle(ctx: Context, seconds: float) -> dict[str, Row]:
    """CPU and RSS of an idle bridge, seed catcher (and reference), measured side by side."""
    setups = [await ctx.exchange() for _ in range(3 if ctx.ref_env else 2)]
    children = {"ours": await ctx.start_bridge(ctx.bridge_overrides(setups[0][0], 1, True)),
                "seed": await ctx.start_seed(setups[1][0], 1)}
    if ctx.ref_env:
        children["ref"] = await ctx.start_bridge(ctx.bridge_overrides(setups[2][0], 1, True),
                                                 ref=True)
    try:
        await asyncio.sleep(3.0)  # let start-up work settle
        before = {label: cpu_seconds(c.pid) for label, c in children.items()}
        await asyncio.sleep(seconds)
        rows = {}
        for label, c in children.items():
            cpu = cpu_seconds(c.pid) - before[label]
            rows[label] = {"cpu_s_per_min": cpu * 60.0 / seconds,
                           "core_pct": cpu / seconds * 100.0, **memory_mb(c.pid)}
    finally:
        for c in children.values():
            await c.stop()
        for name, _q, channel in setups:
            await ctx.drop_exchange(name, channel)
    return rows


async def backlog(ctx: Context, count: int, spool: bool, ref: bool = False) -> Row:
    """Peak RSS with `count` events caught while the broker is away; then the drain rate."""
    assert ctx.sim is not None
    name, _queue, channel = await ctx.exchange()
    proxy = Proxy(("127.0.0.1", 5672))
    port = await proxy.open()
    url = ctx.url.replace(":5672", f":{port}")
    overrides = ctx.bridge_overrides(name, 1, spool, url=url,
                                     max_events=None if spool else count + 10_000)
    bridge = await ctx.start_bridge(overrides, ref=ref)
    try:
        await proxy.cut()
        base = memory_mb(bridge.pid)
        await ctx.sim.request("burst", count=count, names=1, text=64)
        caught = await bridge.request("wait_caught", count=count, timeout=600.0)
        await asyncio.sleep(1.0)  # spool commits, refills settle
        held = memory_mb(bridge.pid)
        await proxy.open()
        t0 = time.time()
        done = await bridge.request("wait_confirmed", count=count, timeout=600.0)
        drained = memory_mb(bridge.pid)
    finally:
        await bridge.stop()
        await proxy.cut()
        await ctx.drop_exchange(name, channel)
    return {"rss_before_mb": base["rss_mb"], "rss_held_mb": held["rss_mb"],
            "peak_rss_mb": drained["hwm_mb"], "rss_after_drain_mb": drained["rss_mb"],
            "caught": caught["caught"],
            "drain_events_per_s": count / (done["t"] - t0) if done["ok"] else 0.0}


# -- running and reporting ----------------------------------------------------------------


def median_rows(rows: list[Row]) -> Row:
    """The median of each numeric field over the repetitions (others from the first)."""
    out: Row = {}
    for key, first in rows[0].items():
        if isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = statistics.median(r[key] for r in rows)
        else:
            out[key] = first
    out["runs"] = len(rows)
    return out


async def repeat(reps: int, scenario: Callable[[], Awaitable[Row]]) -> list[Row]:
    """Run a scenario `reps` times."""
    return [await scenario() for _ in range(reps)]


def server_properties(connection: aio_pika.abc.AbstractConnection) -> dict[str, Any]:
    """The broker's server properties (its version among them), if aiormq exposes them."""
    underlay = connection.transport
    if underlay is None:
        return {}
    return dict(underlay.connection.server_properties)


def machine(url: str, server_properties: dict[str, Any]) -> dict[str, Any]:
    """The machine the figures come from."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    version = server_properties.get("version", b"?")
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 1024**2, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "rabbitmq": version.decode() if isinstance(version, bytes) else str(version),
            "loadavg_at_start": os.getloadavg()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every section, in order; returns the results."""
    quick = args.quick
    reps = args.reps
    burst_count = 10_000 if quick else 50_000
    scale_count = 5_000 if quick else 20_000
    idle_seconds = 15.0 if quick else 60.0
    backlog_count = 50_000 if quick else 200_000
    lat_seconds = {200.0: 5.0 if quick else 10.0}
    steady_seconds = 10.0 if quick else 30.0
    results: dict[str, Any] = {"quick": quick, "reps": reps}
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        ctx = Context(args, Path(tmp))
        await ctx.open()
        try:
            assert ctx.connection is not None
            props = server_properties(ctx.connection)
            results["machine"] = machine(ctx.url, props)
            results["reference"] = args.reference
            sections = set(args.only or SECTIONS)
            if "throughput" in sections:
                results["throughput"] = await throughput_section(ctx, reps, burst_count)
            if "steady" in sections:
                results["steady"] = await steady_section(ctx, reps, STEADY_RATE, steady_seconds)
            if "latency" in sections:
                results["latency"] = await latency_section(ctx, reps, lat_seconds)
            if "idle" in sections:
                idles = [await idle(ctx, idle_seconds) for _ in range(reps)]
                results["idle"] = {k: median_rows([r[k] for r in idles]) for k in idles[0]}
                results["idle"]["seconds"] = idle_seconds
            if "backlog" in sections:
                results["backlog"] = await backlog_section(ctx, backlog_count)
            if "scaling" in sections:
                results["scaling"] = await scaling_section(ctx, reps, scale_count)
        finally:
            await ctx.close()
    results["goals"] = goals(results)
    return results


SECTIONS = ["throughput", "steady", "latency", "idle", "backlog", "scaling"]
STEADY_RATE = 2000.0


async def throughput_section(ctx: Context, reps: int, count: int) -> dict[str, Any]:
    """Raiser alone, raw ceiling, bridge spool on/off (and the reference's): interleaved."""
    bridges = ["spool_on", "spool_off"] + (["ref_spool_on"] if ctx.ref_env else [])
    rows: dict[str, list[Row]] = {k: [] for k in ["raiser", "raw", *bridges]}
    for _ in range(reps):
        rows["raiser"].append(await raiser_alone(ctx, count, 64))
        rows["raw"].append(await raw_ceiling(ctx, count, 1, 64, ctx.args.windows))
        for key in bridges:
            rows[key].append(await bridge_burst(ctx, count, 1, 64, spool=key != "spool_off",
                                                ref=key.startswith("ref")))
    out: dict[str, Any] = {k: median_rows(v) for k, v in rows.items()}
    for key in bridges:
        out[key]["ratio_to_raw"] = _median_ratio(rows[key], rows["raw"], "events_per_s")
        out[key]["cpu_ratio_to_raw"] = _median_ratio(rows[key], rows["raw"], "cpu_us_per_event")
    out["count"] = count
    return out


def _median_ratio(rows: list[Row], baseline: list[Row], key: str) -> float:
    """The median over repetitions of row[key] / baseline[key], pairs from the same repetition."""
    return float(statistics.median(r[key] / b[key] for r, b in zip(rows, baseline, strict=True)))


async def steady_section(ctx: Context, reps: int, rate: float, seconds: float) -> dict[str, Any]:
    """A steady `rate` for `seconds`: the bridge (raise → consumer) and the raw publisher
    (publish → consumer), CPU per event of each; the reference bridge too when given."""
    keys = ["ours", "raw"] + (["ref"] if ctx.ref_env else [])
    rows: dict[str, list[Row]] = {k: [] for k in keys}
    for _ in range(reps):
        for key in keys:
            if key == "raw":
                rows[key].append(await raw_steady(ctx, rate, seconds))
            else:
                rows[key].append(await latency(ctx, key, rate, seconds))
    out: dict[str, Any] = {k: median_rows(v) for k, v in rows.items()}
    for key in keys:
        # Each run's p99 and load: on a shared machine the spread says more than the median.
        out[key]["runs_p99_ms"] = [r.get("p99_ms", float("inf")) for r in rows[key]]
        out[key]["runs_loadavg"] = [r["loadavg_1min"] for r in rows[key]]
        if all("stages" in r for r in rows[key]):  # --stages: the bridge's own part
            out[key]["runs_own_p99_ms"] = [r["stages"]["raise_to_socket_ms"]["p99"]
                                           for r in rows[key]]
        if key != "raw":
            out[key]["cpu_ratio_to_raw"] = _median_ratio(rows[key], rows["raw"],
                                                         "cpu_us_per_event")
    out["rate"], out["seconds"] = rate, seconds
    return out


async def backlog_section(ctx: Context, count: int) -> dict[str, Any]:
    """Spool on and off (and the reference, spool on): RSS held, peak, drain rate."""
    out: dict[str, Any] = {"count": count,
                           "spool_on": await backlog(ctx, count, spool=True),
                           "spool_off": await backlog(ctx, count, spool=False)}
    if ctx.ref_env:
        out["ref_spool_on"] = await backlog(ctx, count, spool=True, ref=True)
    return out


def goals(results: dict[str, Any]) -> list[Row]:
    """Each goal of issue 15 that this run measured: its figure, its bound, whether it is met.

    "No worse than before" compares with the `--reference` bridge of the same run,
    with 10 % of slack for noise on CPU and 5 MiB on RSS.
    """
    out: list[Row] = []

    def goal(name: str, figure: float, bound: float, met: bool, unit: str = "") -> None:
        out.append({"goal": name, "figure": round(figure, 3), "bound": round(bound, 3),
                    "unit": unit, "met": met})

    if "steady" in results:
        st = results["steady"]
        ours = st["ours"]
        p99 = ours.get("p99_ms", float("inf")) if ours["received"] == ours["raised"] else \
            float("inf")
        goal(f"p99 raise->subscriber at {st['rate']:.0f}/s for {st['seconds']:.0f} s",
             p99, 10.0, p99 <= 10.0, "ms")
        goal("steady: CPU per event / raw CPU per message", ours["cpu_ratio_to_raw"], 1.2,
             ours["cpu_ratio_to_raw"] <= 1.2, "x")
        if "ref" in st:
            goal("steady: CPU per event / reference's", ours["cpu_us_per_event"]
                 / st["ref"]["cpu_us_per_event"], 1.0,
                 ours["cpu_us_per_event"] <= st["ref"]["cpu_us_per_event"], "x")
    if "throughput" in results:
        t = results["throughput"]
        goal("burst: CPU per event / raw CPU per message (spool on)",
             t["spool_on"]["cpu_ratio_to_raw"], 1.2, t["spool_on"]["cpu_ratio_to_raw"] <= 1.2, "x")
        goal("burst: throughput / raw (spool on)", t["spool_on"]["ratio_to_raw"], 0.9,
             t["spool_on"]["ratio_to_raw"] >= 0.9, "x")
        goal("stretch: throughput / raw (spool on) above 1", t["spool_on"]["ratio_to_raw"], 1.0,
             t["spool_on"]["ratio_to_raw"] > 1.0, "x")
        goal("stretch: throughput / raw (spool off) above 1", t["spool_off"]["ratio_to_raw"],
             1.0, t["spool_off"]["ratio_to_raw"] > 1.0, "x")
    if "idle" in results and "ref" in results["idle"]:
        ours, ref = results["idle"]["ours"], results["idle"]["ref"]
        goal("idle CPU no worse than the reference (% of a core, +10 %)", ours["core_pct"],
             ref["core_pct"] * 1.1, ours["core_pct"] <= ref["core_pct"] * 1.1, "%")
        goal("idle RSS no worse than the reference (+5 MiB)", ours["rss_mb"],
             ref["rss_mb"] + 5.0, ours["rss_mb"] <= ref["rss_mb"] + 5.0, "MiB")
    if "backlog" in results and "ref_spool_on" in results["backlog"]:
        ours, ref = results["backlog"]["spool_on"], results["backlog"]["ref_spool_on"]
        goal("backlog peak RSS (spool on) no worse than the reference (+5 MiB)",
             ours["peak_rss_mb"], ref["peak_rss_mb"] + 5.0,
             ours["peak_rss_mb"] <= ref["peak_rss_mb"] + 5.0, "MiB")
    return out


async def latency_section(ctx: Context, reps: int, seconds: dict[float, float]) -> dict[str, Any]:
    """Ours and the seed at each rate, interleaved."""
    out: dict[str, Any] = {}
    for rate, duration in seconds.items():
        rows: dict[str, list[Row]] = {"ours": [], "seed": []}
        for _ in range(reps):
            for catcher in ("ours", "seed"):
                rows[catcher].append(await latency(ctx, catcher, rate, duration))
        out[str(int(rate))] = {k: median_rows(v) for k, v in rows.items()}
        out[str(int(rate))]["seconds"] = duration
    return out


async def scaling_section(ctx: Context, reps: int, count: int) -> dict[str, Any]:
    """Throughput and CPU per event by registered names and by text size (spool on)."""
    cases = [(1, 0), (1, 256), (10, 256), (100, 256)]
    rows: dict[str, list[Row]] = {f"names={n},text={t}": [] for n, t in cases}
    for _ in range(reps):
        for names, text in cases:
            rows[f"names={names},text={text}"].append(
                await bridge_burst(ctx, count, names, text, spool=True))
    out: dict[str, Any] = {k: median_rows(v) for k, v in rows.items()}
    out["count"] = count
    return out


def render(results: dict[str, Any]) -> str:
    """The results as one plain-text table."""
    lines: list[str] = []
    m = results["machine"]
    lines.append(f"machine: {m['nproc']} cores {m['cpu']}, {m['memory_gib']} GiB, "
                 f"Python {m['python']}, RabbitMQ {m['rabbitmq']}; median of {results['reps']}"
                 f" run(s){' (quick)' if results['quick'] else ''}")
    row = "{:<44} {:>14} {:>14} {:>10}"
    lines.append(row.format("figure", "ours", "baseline", "ratio"))
    if "throughput" in results:
        t = results["throughput"]
        raw = t["raw"]["events_per_s"]
        lines.append(f"-- throughput, {t['count']} events, 64 B text "
                     f"(raw best window {t['raw']['window']})")
        lines.append(row.format("raiser alone, events/s", f"{t['raiser']['events_per_s']:.0f}",
                                "", ""))
        for key in ("spool_on", "spool_off", "ref_spool_on"):
            if key not in t:
                continue
            b = t[key]
            lines.append(row.format(f"{key.replace('_', ' ')}: events/s vs raw",
                                    f"{b['events_per_s']:.0f}", f"{raw:.0f}",
                                    f"{b['ratio_to_raw']:.2f}"))
            lines.append(row.format(f"{key.replace('_', ' ')}: CPU us/event vs raw",
                                    f"{b['cpu_us_per_event']:.0f}",
                                    f"{t['raw']['cpu_us_per_event']:.0f}",
                                    f"{b['cpu_us_per_event'] / t['raw']['cpu_us_per_event']:.2f}"))
            lines.append(row.format(f"{key.replace('_', ' ')}: RSS MiB after burst",
                                    f"{b['rss_mb']:.0f}", "", ""))
    if "steady" in results:
        lines.extend(_render_steady(results["steady"], row))
    if "latency" in results:
        for rate, r in results["latency"].items():
            lines.append(f"-- latency raise -> consumer, {rate} events/s for {r['seconds']:.0f} s"
                         " (baseline: seed design)")
            for key in ("p50_ms", "p99_ms", "max_ms"):
                ours, seed = r["ours"].get(key, float("nan")), r["seed"].get(key, float("nan"))
                lines.append(row.format(f"{key.replace('_ms', '')} ms", f"{ours:.1f}",
                                        f"{seed:.1f}", f"{ours / seed:.2f}" if seed else ""))
            lines.append(row.format("CPU us/event (catching process)",
                                    f"{r['ours'].get('cpu_us_per_event', float('nan')):.0f}",
                                    f"{r['seed'].get('cpu_us_per_event', float('nan')):.0f}", ""))
            lines.append(row.format("received / raised",
                                    f"{r['ours']['received']:.0f}/{r['ours']['raised']:.0f}",
                                    f"{r['seed']['received']:.0f}/{r['seed']['raised']:.0f}",
                                    ""))
    if "idle" in results:
        i = results["idle"]
        lines.append(f"-- idle, {i['seconds']:.0f} s with no events (baseline: seed design)")
        for key, label in (("cpu_s_per_min", "CPU s per minute"), ("core_pct", "% of a core"),
                           ("rss_mb", "RSS MiB")):
            ours, seed = i["ours"][key], i["seed"][key]
            lines.append(row.format(label, f"{ours:.3f}", f"{seed:.3f}",
                                    f"{ours / seed:.2f}" if seed else ""))
            if "ref" in i:
                lines.append(row.format(f"{label}, vs the reference", f"{ours:.3f}",
                                        f"{i['ref'][key]:.3f}", ""))
    if "backlog" in results:
        b = results["backlog"]
        lines.append(f"-- backlog: {b['count']} events caught while the broker is away")
        for key in ("spool_on", "spool_off", "ref_spool_on"):
            if key not in b:
                continue
            r = b[key]
            lines.append(row.format(f"{key.replace('_', ' ')}: RSS MiB before/held",
                                    f"{r['rss_before_mb']:.0f}/{r['rss_held_mb']:.0f}", "", ""))
            lines.append(row.format(f"{key.replace('_', ' ')}: peak RSS MiB",
                                    f"{r['peak_rss_mb']:.0f}", "", ""))
            lines.append(row.format(f"{key.replace('_', ' ')}: drain events/s",
                                    f"{r['drain_events_per_s']:.0f}", "", ""))
    if "scaling" in results:
        s = results["scaling"]
        lines.append(f"-- scaling, {s['count']} events, spool on")
        for key, r in s.items():
            if key == "count":
                continue
            lines.append(row.format(f"{key}: events/s, CPU us/event",
                                    f"{r['events_per_s']:.0f}", f"{r['cpu_us_per_event']:.0f}",
                                    ""))
    if results.get("goals"):
        lines.append("-- goals (issue 15)" + (f"; reference {results['reference']}"
                                              if results.get("reference") else ""))
        lines.extend(f"{'MET    ' if g['met'] else 'NOT MET'} {g['goal']}: {g['figure']}"
                     f" {g['unit']} (bound {g['bound']})" for g in results["goals"])
    return "\n".join(lines)


def _render_steady(st: dict[str, Any], row: str) -> list[str]:
    lines = [(f"-- steady {st['rate']:.0f} events/s for {st['seconds']:.0f} s: bridge raise ->"
             " consumer; baseline: raw aio-pika publish -> consumer")]
    others = [k for k in ("raw", "ref") if k in st]
    for other in others:
        if other == "ref":
            lines.append("   (baseline below: the reference bridge)")
        for key in ("p50_ms", "p99_ms", "max_ms"):
            ours, base = st["ours"].get(key, float("nan")), st[other].get(key, float("nan"))
            lines.append(row.format(f"{key.replace('_ms', '')} ms", f"{ours:.1f}",
                                    f"{base:.1f}", f"{ours / base:.2f}" if base else ""))
        ours, base = st["ours"]["cpu_us_per_event"], st[other]["cpu_us_per_event"]
        lines.append(row.format("CPU us/event", f"{ours:.0f}", f"{base:.0f}",
                                f"{ours / base:.2f}"))
        lines.append(row.format("received / raised",
                                f"{st['ours']['received']:.0f}/{st['ours']['raised']:.0f}",
                                f"{st[other]['received']:.0f}/{st[other]['raised']:.0f}", ""))
    lines.extend(f"   each run's p99 ms (load average) {key}: " + ", ".join(
        f"{p:.1f} ({a:.1f})" for p, a in zip(st[key]["runs_p99_ms"], st[key]["runs_loadavg"],
                                             strict=True))
        for key in ("ours", *others) if "runs_p99_ms" in st[key])
    lines.extend(f"   each run's p99 ms of raise -> bridge's socket write, {key}: " + ", ".join(
        f"{p:.1f}" for p in st[key]["runs_own_p99_ms"])
        for key in ("ours", "ref") if "runs_own_p99_ms" in st.get(key, {}))
    # Latency is only as good as the machine is quiet: say how loaded it was.
    lines.append(row.format("load average (1 min) before / after",
                            f"{st['ours'].get('loadavg_before', float('nan')):.1f} / "
                            f"{st['ours']['loadavg_1min']:.1f}",
                            f"{st['raw']['loadavg_1min']:.1f}", ""))
    for key in ("ours", "ref"):
        if "bridge_gc" in st.get(key, {}):
            lines.extend(_render_gc(st[key]["bridge_gc"], row, "" if key == "ours"
                                    else " (reference)"))
    if "stages" in st["ours"]:
        lines.extend(stages.render(st["ours"]["stages"], row))
    if "stages" in st.get("ref", {}):
        own = st["ref"]["stages"]["raise_to_socket_ms"]
        lines.append(row.format("reference: raise -> socket write p50/p99/max",
                                f"{own['p50']:.1f}/{own['p99']:.1f}/{own['max']:.1f}", "", ""))
    return lines


def _render_gc(g: dict[str, Any], row: str, label: str) -> list[str]:
    """The bridge's GC pauses: how many, how long (wall), longest per generation (CPU too)."""
    return [
        row.format(f"bridge GC pauses{label}: count, total/max ms", f"{g['count']}",
                   f"{g['total_ms']:.1f} / {g['max_ms']:.1f}", ""),
        row.format("  by generation 0/1/2: count; longest ms",
                   "/".join(str(n) for n in g["by_generation"].values()),
                   "/".join(f"{v:.1f}" for v in g["max_ms_by_generation"].values()), ""),
        row.format("  longest by generation, CPU ms", "",
                   "/".join(f"{v:.1f}" for v in g["max_cpu_ms_by_generation"].values()), ""),
    ]


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="smaller counts, 15 s idle, 10 s steady")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--amqp", default=os.environ.get("BRIDGE_TEST_AMQP_URL", DEFAULT_URL))
    parser.add_argument("--only", nargs="*", choices=SECTIONS)
    parser.add_argument("--reference", metavar="GIT_REF",
                        help="also run the bridge of this commit (e.g. main) side by side")
    parser.add_argument("--windows", type=int, nargs="*", default=[256, 1024, 4096],
                        help="confirm windows the raw publisher tries (best one counts)")
    parser.add_argument("--out", type=Path, help="JSON file (default results[-quick].json here)")
    parser.add_argument("--profile", metavar="FILE",
                        help="only run one spool-on burst under py-spy; raw stacks to FILE")
    parser.add_argument("--rate", type=float,
                        help="with --profile: events/s raised at a steady rate, for 5 s")
    parser.add_argument("--stages", action="store_true",
                        help="steady: stamp each event at each stage and show where the "
                             "slowest 1 %% spent their time (costs the bridge a few us/event)")
    args = parser.parse_args(argv)
    DRIVER_GC.install()
    if args.profile:
        return asyncio.run(profile(args))
    results = asyncio.run(run(args))
    table = render(results)
    print(table)
    out = args.out or HERE / ("results-quick.json" if args.quick else "results.json")
    results["table"] = table.splitlines()
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"written to {out}")
    return 0


async def profile(args: argparse.Namespace) -> int:
    """One spool-on burst (or --rate events/s for 5 s) through a bridge sampled by py-spy."""
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        ctx = Context(args, Path(tmp))
        await ctx.open()
        try:
            if args.rate:
                row = await latency(ctx, "ours", args.rate, 5.0, profile=args.profile)
            else:
                row = await bridge_burst(ctx, 10_000 if args.quick else 50_000, 1, 64,
                                         spool=True, profile=args.profile)
        finally:
            await ctx.close()
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
