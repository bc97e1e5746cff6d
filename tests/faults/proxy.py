"""A TCP proxy for fault tests: cut, stall or refuse the connections it carries.

It runs its own event loop in a daemon thread (like the simulator's
`ServerThread`), so a test may drive it from synchronous code, from a
coroutine, or while its own loop is busy; every control method is
thread-safe and returns once the proxy has acted.

* `cut()` aborts every connection on both sides at once (RST, no goodbye),
  as a network failure or a broker crash looks to the client.
* `pause()` stops forwarding in both directions without closing anything:
  a half-open connection, which only a timeout or a probe can notice.
* `freeze()` does that for good to the connections carried now only: new
  connections flow, as when one session went half-open and the DBMS did not.
* `refusing = True` makes new connections fail at once (accepted, then
  aborted) until set back to False.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

log = logging.getLogger("tests.faults.proxy")

T = TypeVar("T")
_CHUNK = 64 * 1024


class _Link:
    """One proxied connection: the client's side and the upstream side."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.cuts = 0  # connections aborted by cut()
        self.accepted = 0
        self.refusing = False
        self._port = 0
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._frozen: set[_Link] = set()
        self._thawed: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    # -- life cycle --------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> TcpProxy:
        """Listen on an ephemeral loopback port; returns self."""
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._thawed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Abort every connection, stop listening and end the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.refusing = True
        # Wake paused pumps and abort every link: the handlers end by themselves
        # (cancelling a stream handler makes asyncio log an error).
        await self._set_flowing(True)
        assert self._thawed is not None
        self._thawed.set()
        for link in list(self._links):
            link.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return self._port

    @property
    def connections(self) -> int:
        """Connections being carried now."""
        return len(self._links)

    # -- faults ------------------------------------------------------------------

    def cut(self) -> int:
        """Abort every connection (both sides); returns how many."""
        return self._call(self._cut())

    async def _cut(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self.cuts += len(links)
        return len(links)

    def pause(self) -> None:
        """Stop forwarding (both ways) and hold the connections open."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again after `pause`."""
        self._call(self._set_flowing(True))

    def freeze(self) -> int:
        """Stop forwarding on the connections carried now, for good; returns how many.

        Unlike `pause`, new connections flow: the DBMS is fine and only the
        frozen sessions are half-open, so a client can replace them at once.
        """
        return self._call(self._freeze())

    async def _freeze(self) -> int:
        self._frozen.update(self._links)
        return len(self._links)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    # -- forwarding --------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.refusing:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                writer.transport.abort()  # upstream down: the client sees a reset
                return
            self.accepted += 1
            link = _Link(writer, up_writer)
            self._links.add(link)
            try:
                await asyncio.gather(
                    self._pump(link, reader, up_writer), self._pump(link, up_reader, writer)
                )
            finally:
                self._links.discard(link)
                self._frozen.discard(link)
                link.abort()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy one direction until EOF or an error; ends the link either way."""
        try:
            while True:
                await self._hold(link)  # paused: read nothing, so TCP backs up
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._hold(link)  # a pause while reading holds this chunk too
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _hold(self, link: _Link) -> None:
        """Return once `link` may forward: the proxy flows and the link is not frozen."""
        assert self._flowing is not None
        assert self._thawed is not None
        await self._flowing.wait()
        if link in self._frozen:
            await self._thawed.wait()  # frozen for good; only stop() ends it
