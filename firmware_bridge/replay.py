"""Replay of recorded readings through the ordinary driver interface: the demo, the van
simulator and the fault tests drive the real agent with real captures this way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from firmware_bridge.driver import Driver

T = TypeVar("T")


def shifted(reading: T, offset_s: float) -> T:
    """The same reading, ``offset_s`` later (every reading type has a ``time`` field)."""
    if offset_s == 0:
        return reading
    return dataclasses.replace(reading, time=reading.time + offset_s)  # type: ignore[type-var, attr-defined]


class ReplayDriver(Driver[T]):
    """Emits recorded readings, ``interval_s`` apart (0 = as fast as the agent takes them).

    With ``repeat`` > 1 the recording plays again, shifted in time to follow the last pass, so a
    short capture can stand for a long drive. After the last reading the driver stays idle.
    """

    kind = "replay"

    def __init__(
        self, name: str, load: Callable[[], Iterable[T]], interval_s: float = 0.0, repeat: int = 1
    ) -> None:
        super().__init__(name)
        self._load = load
        self._interval = interval_s
        self._repeat = max(1, repeat)
        self._readings: list[T] = []
        self._pos = 0
        self._period = 0.0

    def _open(self) -> None:
        if not self._readings:
            self._readings = list(self._load())
            times = [r.time for r in self._readings]  # type: ignore[attr-defined]
            self._period = (max(times) - min(times) + 1.0) if times else 0.0

    def _read(self, timeout: float) -> Sequence[T]:
        total = len(self._readings) * self._repeat
        if self._pos >= total:
            self._stop.wait(timeout)
            return ()
        if self._interval > 0:
            self._stop.wait(self._interval)
            count = 1
        else:
            count = 256
        out: list[T] = []
        for _ in range(min(count, total - self._pos)):
            rep, i = divmod(self._pos, len(self._readings))
            out.append(shifted(self._readings[i], rep * self._period))
            self._pos += 1
        return out

    def _close(self) -> None:
        pass

    @property
    def finished(self) -> bool:
        return bool(self._readings) and self._pos >= len(self._readings) * self._repeat
