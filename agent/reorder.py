"""The live shell's reorder window: drivers run in threads, so readings reach the event loop in
scheduling order; the core must see them in event-time order.

Events are held until the corrected clock is ``window_s`` past them, then released in time order
(ties in arrival order). An event older than one already released (it came later than the
window allows) is released at once and counted in ``late``; the core keeps its own clock from
going back. At most ``max_held`` events are held: past that the oldest is released early.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

T = TypeVar("T")


class ReorderWindow(Generic[T]):
    """A time-ordered hold. Single-threaded. ``T`` has a ``time`` field (event time, seconds)."""

    def __init__(self, window_s: float = 0.5, max_held: int = 10_000) -> None:
        self.window_s = window_s
        self.max_held = max_held
        self.late = 0
        self._heap: list[tuple[float, int, T]] = []
        self._order = 0
        self._released = float("-inf")

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event: T) -> list[T]:
        """Hold ``event``; returns what must leave at once (a late event, or overflow)."""
        t: float = event.time  # type: ignore[attr-defined]
        if t < self._released:
            self.late += 1
            return [event]
        self._order += 1
        heapq.heappush(self._heap, (t, self._order, event))
        out: list[T] = []
        while len(self._heap) > self.max_held:
            out.append(self._pop())
        return out

    def release(self, now: float) -> list[T]:
        """Every held event at or before ``now - window_s``, in time order."""
        horizon = now - self.window_s
        out: list[T] = []
        while self._heap and self._heap[0][0] <= horizon:
            out.append(self._pop())
        return out

    def drain(self) -> list[T]:
        """Everything held, in time order (at shutdown)."""
        out: list[T] = []
        while self._heap:
            out.append(self._pop())
        return out

    def _pop(self) -> T:
        t, _, event = heapq.heappop(self._heap)
        self._released = max(self._released, t)
        return event
