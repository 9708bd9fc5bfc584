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

GNSS time of a reading = offset + rate * (its monotonic time - the latest fix's). The **rate**
(GNSS seconds per monotonic second) is 1 for a real receiver, give or take a few parts per million
that the offset window follows anyway; a simulator running a day ``scale`` times faster than real
time makes it ``scale``. It is estimated from the last ``window`` fixes as the median of the slopes
between every pair of them (Theil-Sen: a late fix, or a GNSS time that jumps, moves a minority of
slopes and not the median), snapped to exactly 1 within ``snap`` of it (so a real van's readings
are placed exactly as with no rate at all). An estimate outside ``[min_rate, max_rate]``, or not
steady (the older and newer halves of the window disagree by more than a quarter, as when the
receiver's time freezes), is refused (counted in ``refused_rates``) and the last good rate kept;
nothing is estimated from fewer than 8 fixes (or a full window), where latency would pass for a
rate. Host-stamp ages stay in host seconds and are turned into monotonic seconds before the rate
applies, so the wall-clock rules above hold at any rate. The offset is the largest of the
observations ``gnss - rate * (mono - latest mono)``: still the fix that arrived quickest. A
GNSS time that jumps (it goes back, or lands more than ``max_age_s`` of monotonic time ahead of
where the model puts it, which latency cannot do) restarts the window from that fix, keeping the
rate.

Until the first fix gives an offset, non-GNSS readings are **held** with their monotonic stamps
and released, restamped and in arrival order, when it comes; so nothing ends up hours off or out
of order. The hold is bounded: past ``hold_max`` readings the oldest telemetry (signals) is
dropped and counted in ``dropped_unsynced``; deliveries and shell events are never dropped (they
come at human rates).

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

    def __init__(
        self,
        window: int = 16,
        max_age_s: float = 2.0,
        hold_max: int = 50_000,
        *,
        snap: float = 0.05,
        min_rate: float = 0.01,
        max_rate: float = 1000.0,
    ) -> None:
        self.max_age_s = max_age_s
        self.hold_max = hold_max
        self.snap = snap
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.suspect_stamps = 0
        self.dropped_unsynced = 0
        self.refused_rates = 0
        self.rate = 1.0
        """GNSS seconds per monotonic second (1 until fixes say otherwise)."""
        self._observations: deque[tuple[float, float]] = deque(maxlen=window)
        self._anchor: tuple[float, float] | None = None  # (mono, gnss) the model goes through
        self._telemetry: deque[_Held[T]] = deque()
        self._priority: list[_Held[T]] = []
        self._order = 0

    @property
    def offset(self) -> float | None:
        """GNSS time minus monotonic time at the latest fix; ``None`` before the first fix."""
        return None if self._anchor is None else self._anchor[1] - self._anchor[0]

    @property
    def held(self) -> int:
        """Readings waiting for the first offset."""
        return len(self._telemetry) + len(self._priority)

    def now(self, mono: float) -> float | None:
        """The GNSS time at monotonic time ``mono``; ``None`` before the first fix."""
        if self._anchor is None:
            return None
        return self._anchor[1] + self.rate * (mono - self._anchor[0])

    def best_now(self, arrival: Arrival) -> float:
        """The best time for something that is not a reading (a downlink document, an effect's
        result) and so must not be held until the first fix: GNSS time once the offset is known,
        else the host's wall clock at ``arrival``."""
        now = self.now(arrival.mono)
        return arrival.host if now is None else now

    def observe(self, mono: float, gnss: float) -> None:
        """A GNSS time seen at monotonic time ``mono`` (a fix's arrival)."""
        obs = self._observations
        if obs:
            ahead = (gnss - self.now(mono)) / self.rate  # type: ignore[operator]
            if gnss < obs[-1][1] or ahead > self.max_age_s:
                obs.clear()  # the GNSS time jumped: earlier fixes describe another time line
        obs.append((mono, gnss))
        self._estimate_rate()
        latest = obs[-1][0]
        self._anchor = (latest, max(g - self.rate * (m - latest) for m, g in obs))

    def _estimate_rate(self) -> None:
        obs = list(self._observations)
        if len(obs) < min(8, self._observations.maxlen or 8):
            return  # too few fixes: latency would pass for a rate
        rate = _median_slope(obs)
        if rate is None:
            return
        half = len(obs) // 2
        older, newer = _median_slope(obs[: half + 1]), _median_slope(obs[half:])
        steady = older is None or newer is None or abs(older - newer) <= 0.25 * max(abs(older), abs(newer))
        if not (steady and self.min_rate <= rate <= self.max_rate):
            self.refused_rates += 1
            return
        self.rate = 1.0 if abs(rate - 1.0) <= self.snap else rate

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
        gnss = self.now(mono)
        if gnss is None:
            self._hold(reading, mono)
            return []
        return [_restamped(reading, gnss)]

    def flush(self, fallback_offset: float) -> list[T]:
        """Held readings released with ``fallback_offset`` when no fix ever came (shutdown): the
        shell passes wall clock minus monotonic clock, the best time left."""
        if not self.held:
            return []
        if self._anchor is None:
            self._anchor = (0.0, fallback_offset)
            try:
                return self._release()
            finally:
                self._anchor = None
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
        held = sorted([*self._telemetry, *self._priority], key=lambda h: (h.mono, h.order))
        self._telemetry.clear()
        self._priority.clear()
        return [_restamped(h.reading, self.now(h.mono)) for h in held]  # type: ignore[arg-type]


def _median_slope(obs: list[tuple[float, float]]) -> float | None:
    """Theil-Sen: the median of the GNSS-per-monotonic slopes between every pair of fixes."""
    slopes = sorted(
        (g2 - g1) / (m2 - m1) for i, (m1, g1) in enumerate(obs) for m2, g2 in obs[i + 1 :] if m2 > m1
    )
    n = len(slopes)
    if not n:
        return None
    return slopes[n // 2] if n % 2 else (slopes[n // 2 - 1] + slopes[n // 2]) / 2


def _restamped(reading: T, t: float) -> T:
    return dataclasses.replace(reading, time=t)  # type: ignore[type-var]
