"""The live event stream: records handed over by the ingest after each commit, fanned out to every
Server-Sent Events client.

The ingest calls :meth:`Hub.publish` on its own thread; each subscriber owns a bounded asyncio
queue on the server's loop. A client too slow to keep up loses its oldest events and is sent a
``lagged`` event (it should refetch the state), so one stalled browser never holds the ingest or
grows the collector's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb

QUEUE_EVENTS = 1000
"""Events a subscriber may have waiting before its oldest are dropped."""

KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""

Filter = Callable[[dict[str, Any]], bool]


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    accept: Filter
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))
    lagged: bool = False

    def put(self, event: dict[str, Any]) -> None:  # on the loop's thread
        if self.queue.full():
            self.queue.get_nowait()
            self.lagged = True
        self.queue.put_nowait(event)


class Hub:
    """Fan-out of stored records to subscribers; ``publish`` is the ingest's listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()

    def publish(self, vehicle: str, records: list[pb.Record]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        if not subscribers:
            return
        events = [{"vehicle": vehicle, **convert.to_json(r)} for r in records]
        for sub in subscribers:
            wanted = [e for e in events if sub.accept(e)]
            if wanted:
                with contextlib.suppress(RuntimeError):  # its loop closed: the server is stopping
                    sub.loop.call_soon_threadsafe(_put_all, sub, wanted)

    async def stream(self, accept: Filter = lambda e: True, redact: bool = False) -> AsyncIterator[str]:
        """SSE text for one client: ``event: record`` with the record's export JSON as data; with
        ``redact`` only ``event: changed`` with no data (a customer's page refetches what it may
        see instead of receiving other customers' records)."""
        sub = _Subscriber(asyncio.get_running_loop(), accept)
        with self._lock:
            self._subscribers.add(sub)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if sub.lagged:
                    sub.lagged = False
                    yield "event: lagged\ndata: {}\n\n"
                if redact:
                    yield "event: changed\ndata: {}\n\n"
                else:
                    yield f"event: record\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
        finally:
            with self._lock:
                self._subscribers.discard(sub)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)


def _put_all(sub: _Subscriber, events: list[dict[str, Any]]) -> None:
    for e in events:
        sub.put(e)
