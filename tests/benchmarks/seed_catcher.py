"""The seed design, kept as the benchmark's baseline.

Run as `python -m tests.benchmarks.seed_catcher JSON`.

A faithful re-implementation of pyngres's "Catching DBEvents" example
(/work/shared/seed-catching-dbevents.txt): `pyngres.asyncio` on the event
loop, a catcher coroutine that checks `IIapi_catchEvent`'s completion flag and
sleeps 100 ms when nothing came, a getter coroutine that calls
`IIapi_getEvent(timeout 0)` every 50 ms, both under one session mutex, events
put on an asyncio.Queue. Only what the example leaves out is added: connect,
REGISTER DBEVENT, the ingresdate conversion, and a publisher, which is the
bridge's own (`Publisher` over a `QueueSource`) so that a comparison measures
the catching design and nothing else.

JSON: {"target", "events": [...], "url", "exchange"}. The process speaks the
same stdin/stdout protocol as bridge_proc (ready line, wait_confirmed, counts).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import struct
import sys
from datetime import UTC, datetime
from typing import Any

from bridge.sim.build import ensure_ii_system

os.environ["II_SYSTEM"] = str(ensure_ii_system())

import pyngres.asyncio as py

from bridge.event import CaughtEvent
from bridge.metrics import Metrics
from bridge.publisher import Publisher
from bridge.settings import AmqpSettings
from tests.benchmarks.child import reply, serve_commands, wait_count
from tests.queue_source import QueueSource

DBEVENT_POLLING_INTERVAL = 0.1  # seconds, as in the seed


class SeedCatcher:
    """The seed's globals (handles, run flag, mutex, queue) and its two coroutines."""

    def __init__(self) -> None:
        self.env_handle: Any = None
        self.conn_handle: Any = None
        self.tran_handle: Any = None
        self.run_flag = asyncio.Event()
        self.session_mutex = asyncio.Lock()
        self.event_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    # -- what the example elides ("...") ------------------------------------

    async def connect(self, target: str) -> None:
        """Initialise the OpenAPI, connect, autocommit on (the example's `...`)."""
        init = py.IIAPI_INITPARM()
        init.in_version = py.IIAPI_VERSION_11
        init.in_timeout = -1
        py.IIapi_initialize(init)
        self.env_handle = init.in_envHandle
        tz = ctypes.c_char_p(b"GMT")
        self._set_env(py.IIAPI_EP_TIMEZONE, ctypes.cast(tz, ctypes.c_void_p).value)
        fmt = ctypes.c_long(py.IIAPI_EPV_DFRMT_ISO4)
        self._set_env(py.IIAPI_EP_DATE_FORMAT, ctypes.addressof(fmt))
        cp = py.IIAPI_CONNPARM()
        cp.co_type = py.IIAPI_CT_SQL
        cp.co_target = target.encode()
        cp.co_connHandle = self.env_handle
        cp.co_timeout = -1
        await py.IIapi_connect(cp)
        _check(cp.co_genParm, "connect")
        self.conn_handle = cp.co_connHandle
        ac = py.IIAPI_AUTOPARM()
        ac.ac_connHandle = self.conn_handle
        await py.IIapi_autocommit(ac)
        _check(ac.ac_genParm, "autocommit")
        self.tran_handle = ac.ac_tranHandle

    def _set_env(self, param: int, value: Any) -> None:
        sp = py.IIAPI_SETENVPRMPARM()
        sp.se_envHandle = self.env_handle
        sp.se_paramID = param
        sp.se_paramValue = value
        py.IIapi_setEnvParam(sp)

    async def register(self, name: str) -> None:
        """REGISTER DBEVENT name."""
        async with self.session_mutex:
            qp = py.IIAPI_QUERYPARM()
            qp.qy_connHandle = self.conn_handle
            qp.qy_queryType = py.IIAPI_QT_QUERY
            qp.qy_queryText = f"register dbevent {name}".encode()
            qp.qy_tranHandle = self.tran_handle
            await py.IIapi_query(qp)
            gqp = py.IIAPI_GETQINFOPARM()
            gqp.gq_stmtHandle = qp.qy_stmtHandle
            await py.IIapi_getQueryInfo(gqp)
            _check(gqp.gq_genParm, f"register dbevent {name}")
            clp = py.IIAPI_CLOSEPARM()
            clp.cl_stmtHandle = qp.qy_stmtHandle
            await py.IIapi_close(clp)

    def ingresdate_to_str(self, value: Any, length: int) -> str:
        """The example's helper: an ingresdate as ISO4 text, via IIapi_formatData."""
        src = ctypes.string_at(value, length)
        src_buf = ctypes.create_string_buffer(src, len(src))
        dst = ctypes.create_string_buffer(64)
        fd = py.IIAPI_FORMATPARM()
        fd.fd_envHandle = self.env_handle
        fd.fd_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
        fd.fd_srcDesc.ds_length = len(src)
        fd.fd_srcValue.dv_length = len(src)
        fd.fd_srcValue.dv_value = ctypes.addressof(src_buf)
        fd.fd_dstDesc.ds_dataType = py.IIAPI_CHA_TYPE
        fd.fd_dstDesc.ds_length = len(dst) - 1
        fd.fd_dstValue.dv_length = len(dst) - 1
        fd.fd_dstValue.dv_value = ctypes.addressof(dst)
        py.IIapi_formatData(fd)
        return dst.raw[: fd.fd_dstValue.dv_length].decode("ascii", "replace").strip()

    # -- the example's two coroutines, as written there ----------------------

    async def dbevent_catcher(self) -> None:
        """Task to catch DBEvents (busy-wait loop, 100 ms polling interval)."""
        gdp = py.IIAPI_GETDESCRPARM()
        event_msg = ctypes.c_buffer(258)
        event_value = py.IIAPI_DATAVALUE()
        event_value.dv_length = len(event_msg)
        event_value.dv_value = ctypes.addressof(event_msg)
        event_data = (py.IIAPI_DATAVALUE * 1)()
        event_data[0] = event_value
        gcp = py.IIAPI_GETCOLPARM()
        gcp.gc_rowCount = 1
        gcp.gc_columnCount = 1
        gcp.gc_columnData = event_data

        cep = py.IIAPI_CATCHEVENTPARM()
        cep.ce_connHandle = self.conn_handle
        async with self.session_mutex:
            py.IIapi_catchEvent(cep)
            event_handle = cep.ce_eventHandle

        while self.run_flag.is_set():
            if cep.ce_genParm.gp_completed:
                event: dict[str, Any] = {}
                event["eventDB"] = cep.ce_eventDB[:]
                event["eventName"] = cep.ce_eventName[:]
                event["eventOwner"] = cep.ce_eventOwner[:]
                event["eventTime"] = self.ingresdate_to_str(
                    cep.ce_eventTime.dv_value, cep.ce_eventTime.dv_length)
                if cep.ce_eventInfoAvail:
                    async with self.session_mutex:
                        gdp.gd_stmtHandle = event_handle
                        await py.IIapi_getDescriptor(gdp)
                        gcp.gc_stmtHandle = event_handle
                        await py.IIapi_getColumns(gcp)
                        msg_length, msg_bytes = struct.unpack("h256s", event_msg)
                        event["eventText"] = msg_bytes[:msg_length].decode()
                else:
                    event["eventText"] = None
                await self.event_queue.put(event)

                cep = py.IIAPI_CATCHEVENTPARM()
                cep.ce_connHandle = self.conn_handle
                cep.ce_eventHandle = event_handle
                async with self.session_mutex:
                    py.IIapi_catchEvent(cep)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(DBEVENT_POLLING_INTERVAL)

    async def dbevent_getter(self) -> None:
        """Task to solicit DBEvent notifications every half polling interval."""
        gvp = py.IIAPI_GETEVENTPARM()
        gvp.gv_connHandle = self.conn_handle
        gvp.gv_timeout = 0
        while self.run_flag.is_set():
            async with self.session_mutex:
                await py.IIapi_getEvent(gvp)
            await asyncio.sleep(DBEVENT_POLLING_INTERVAL * 0.5)


def _check(gen: Any, what: str) -> None:
    if gen.gp_status not in (0, 2, 3):
        raise RuntimeError(f"{what} failed with status {gen.gp_status}")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)


async def forward(seed: SeedCatcher, source: QueueSource, metrics: Metrics) -> None:
    """The "main application": hand each queued dict to the publisher."""
    while True:
        event = await seed.event_queue.get()
        text = event["eventText"]
        source.put_nowait(CaughtEvent(
            database=event["eventDB"].decode().strip(),
            owner=event["eventOwner"].decode().strip(),
            name=event["eventName"].decode().strip(),
            raised_at=_parse_time(event["eventTime"]),
            text=None if text is None else text.encode(),
        ))
        metrics.events_caught.inc()


async def main(config: dict[str, Any]) -> None:
    """Connect, register, catch and publish until the driver says quit."""
    metrics = Metrics()
    amqp = AmqpSettings.model_validate({"url": config["url"], "exchange": config["exchange"]})
    publisher = Publisher(amqp, metrics)
    await publisher.start()
    source = QueueSource()
    seed = SeedCatcher()
    await seed.connect(config["target"])
    for name in config["events"]:
        await seed.register(name)
    seed.run_flag.set()
    tasks = [asyncio.create_task(c) for c in (
        seed.dbevent_catcher(), seed.dbevent_getter(), forward(seed, source, metrics),
        publisher.run(source))]
    reply({"ok": True, "pid": os.getpid()})

    async def wait_confirmed(command: dict[str, Any]) -> dict[str, Any]:
        t = await wait_count(lambda: float(metrics.events_confirmed._value.get()),
                             int(command["count"]), float(command["timeout"]))
        return {"ok": t is not None, "t": t,
                "confirmed": float(metrics.events_confirmed._value.get())}

    async def counts(command: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "caught": float(metrics.events_caught._value.get()),
                "confirmed": float(metrics.events_confirmed._value.get())}

    try:
        await serve_commands({"wait_confirmed": wait_confirmed, "counts": counts})
    finally:
        seed.run_flag.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
