"""An in-memory item source, so the publisher is tested and measured without the backlog.

The bridge itself always feeds the publisher from `bridge.backlog.Backlog`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bridge.event import Item


class QueueSource:
    """An in-memory `ItemSource` of events and gap markers, for tests and benchmarks.

    `put()` waits while `maxsize` items (0: unbounded) are queued. After
    `close()`, get() returns the remaining items, then None.
    """

    def __init__(self, maxsize: int = 0) -> None:
        """An empty, open source."""
        self._items: deque[Item] = deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = False
        self.confirmed_count = 0

    def __len__(self) -> int:
        """Items queued, not yet taken by get()."""
        return len(self._items)

    async def put(self, item: Item) -> None:
        """Queue `item`, waiting for room if the source is bounded and full."""
        while self._maxsize and len(self._items) >= self._maxsize:
            self._writable.clear()
            await self._writable.wait()
        self.put_nowait(item)

    def put_nowait(self, item: Item) -> None:
        """Queue `item` now (ignores `maxsize`); RuntimeError once closed."""
        if self._closed:
            raise RuntimeError("QueueSource is closed")
        self._items.append(item)
        self._readable.set()

    def close(self) -> None:
        """No more items: get() returns None once the queued ones are taken."""
        self._closed = True
        self._readable.set()

    async def get(self) -> Item | None:
        """The next item in order, or None when closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return self._items.popleft()

    def confirmed(self, item: Item) -> None:
        """Counts confirmations; an in-memory source has nothing to forget."""
        self.confirmed_count += 1
