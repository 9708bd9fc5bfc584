"""One time base for a live van: GNSS time.

The rule. Every reading is placed on the host's **monotonic** clock at its arrival (the shell
reads ``time.monotonic()`` and ``time.time()`` together when a driver hands it over), because the
monotonic clock never jumps, while the wall clock of a Raspberry Pi (no real-time clock) starts at
the last saved time and jumps when NTP or GNSS sets it. Then:

* a **GNSS** reading (a fix) keeps its own time, the reference, and is an observation:
  ``gnss - mono_at_arrival``. Latency only makes an observation smaller, so the offset is the
  largest of the last ``window`` observations (the fix that arrived quickest), which also follows a
  slow drift between the two clocks;
* a **host**-stamped reading (a SocketCAN frame's kernel stamp) contributes only its age at
  arrival, ``host_now - stamp``: its monotonic time is ``mono_at_arrival - age``. An age outside
  ``[-max_age_s, max_age_s]`` means the wall clock jumped in between: the reading is stamped at
  its arrival instead (off by at most its real age) and counted in ``suspect_stamps``;
* an **arrival** reading (a scanner line, a replayed recording) is stamped at its arrival.

GNSS time of a reading = its monotonic time + offset. Until the first fix gives an offset,
non-GNSS readings are **held** with their monotonic stamps and released, restamped and in arrival
order, when it comes; so nothing ends up hours off or out of order. The hold is bounded: past
``hold_max`` readings the oldest telemetry (signals) is dropped and counted in
``dropped_unsynced``; deliveries and shell events are never dropped (they come at human rates).

Pure: no clock is read here; the shell passes the arrival times in, so a test can make the wall
clock jump at will.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from protocols.records import Signal

T = TypeVar("T")


class Clock(StrEnum):
    """What a reading's own ``time`` means."""

    GNSS = "gnss"
    HOST = "host"
    ARRIVAL = "arrival"


@dataclass(frozen=True, slots=True)
class Arrival:
    """When the shell received a reading: both host clocks read at the same moment."""

    mono: float
    host: float


@dataclass(slots=True)
class _Held(Generic[T]):
    mono: float
    order: int
    reading: T


class TimeBase(Generic[T]):
    """Places readings on GNSS time (see the module's rule). Single-threaded: the shell's event
    loop owns it. ``T`` is any dataclass with a ``time`` field."""

    def __init__(self, window: int = 16, max_age_s: float = 2.0, hold_max: int = 50_000) -> None:
        self.max_age_s = max_age_s
        self.hold_max = hold_max
        self.suspect_stamps = 0
        self.dropped_unsynced = 0
        self._observations: deque[float] = deque(maxlen=window)
        self._telemetry: deque[_Held[T]] = deque()
        self._priority: list[_Held[T]] = []
        self._order = 0

    @property
    def offset(self) -> float | None:
        """GNSS time minus monotonic time; ``None`` before the first fix."""
        return max(self._observations) if self._observations else None

    @property
    def held(self) -> int:
        """Readings waiting for the first offset."""
        return len(self._telemetry) + len(self._priority)

    def now(self, mono: float) -> float | None:
        """The current GNSS time, given the monotonic clock; ``None`` before the first fix."""
        offset = self.offset
        return None if offset is None else mono + offset

    def observe(self, mono: float, gnss: float) -> None:
        """A GNSS time seen at monotonic time ``mono`` (a fix's arrival)."""
        self._observations.append(gnss - mono)

    def place(self, reading: T, clock: Clock, arrival: Arrival) -> list[T]:
        """``reading`` on GNSS time, plus any held readings it releases, in arrival order; an
        empty list while it must be held."""
        if clock is Clock.GNSS:
            first = self.offset is None
            self.observe(arrival.mono, reading.time)  # type: ignore[attr-defined]
            return [*self._release(), reading] if first else [reading]
        mono = arrival.mono
        if clock is Clock.HOST:
            age = arrival.host - reading.time  # type: ignore[attr-defined]
            if abs(age) > self.max_age_s:
                self.suspect_stamps += 1
            else:
                mono -= max(age, 0.0)
        offset = self.offset
        if offset is None:
            self._hold(reading, mono)
            return []
        return [_restamped(reading, mono + offset)]

    def flush(self, fallback_offset: float) -> list[T]:
        """Held readings released with ``fallback_offset`` when no fix ever came (shutdown): the
        shell passes wall clock minus monotonic clock, the best time left."""
        if not self.held:
            return []
        if self.offset is None:
            self._observations.append(fallback_offset)
            try:
                return self._release()
            finally:
                self._observations.clear()
        return self._release()

    def _hold(self, reading: T, mono: float) -> None:
        self._order += 1
        held = _Held(mono, self._order, reading)
        if isinstance(reading, Signal):
            self._telemetry.append(held)
        else:
            self._priority.append(held)
        while self.held > self.hold_max and self._telemetry:
            self._telemetry.popleft()
            self.dropped_unsynced += 1

    def _release(self) -> list[T]:
        offset = self.offset
        assert offset is not None
        held = sorted([*self._telemetry, *self._priority], key=lambda h: (h.mono, h.order))
        self._telemetry.clear()
        self._priority.clear()
        return [_restamped(h.reading, h.mono + offset) for h in held]


def _restamped(reading: T, t: float) -> T:
    return dataclasses.replace(reading, time=t)  # type: ignore[type-var]
