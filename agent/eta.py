"""Live ETAs for the remaining stops, updated on every fix (pure: time comes from the fixes).

Travel between stops comes from the manifest's matrix when it has one (fleet engineers push a new
matrix for traffic). Otherwise, and always from the van's position to the next stop, it is the
great-circle distance times what this van has learned: for each distance band, the time it took
to cover a straight-line distance (the detour factor over the driven speed, measured as one ratio
from pairs of its own past fixes at several lags), blended with a prior until there is data.
Service times are learned per stop kind as a median (robust to the one 20-minute stop) that starts
from the manifest's value.

Cost: an update is one haversine per remaining stop plus O(1) learning; see ``bench/eta.py``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

EARTH_RADIUS_M = 6_371_008.8
# The profile is learned at these straight-line distances (m) and interpolated between them:
# short hops are slower per straight-line metre (corners, lights, parking) than long legs.
PROBE_M = (150.0, 500.0, 1_500.0, 4_000.0, 10_000.0)
# Starting straight-line speed (m/s) at each probe distance before the van has data; each counts
# as PRIOR_WEIGHT_S seconds of observed driving.
PRIOR_CROW_MPS = (5.0, 7.0, 9.0, 11.0, 14.0)
PRIOR_WEIGHT_S = 120.0
# Observations lose half their weight in this much event time: short legs follow the current
# conditions (traffic now, walking a pedestrian zone), long legs the drive's longer history.
HALF_LIFE_S = 1_200.0
# The current regime: the van's pace over the shortest probe, from starting points at most
# NOW_WINDOW_S old, scales every probe (half-life NOW_HALF_LIFE_S), so a van that starts driving
# after a slow stretch (a walk through a pedestrian zone, a jam) is believed within a minute.
NOW_WINDOW_S = 60.0
NOW_HALF_LIFE_S = 90.0
NOW_FADE_S = 300.0  # the regime's weight on a leg starting this far ahead falls to 1/e
ANCHOR_EVERY_S = 10.0  # a new starting point for first-passage times this often
HISTORY_S = 1_800.0  # starting points older than this are dropped
SERVICE_PRIOR_COUNT = 2  # the manifest's service time counts as this many observations
SERVICE_WINDOW = 25  # the last observations of a kind that are kept


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in metres on the mean Earth radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class EtaStop:
    """A stop as the manifest gives it; ``latest`` (event time) is its window end, if any."""

    id: str
    lat: float
    lon: float
    service_s: float = 0.0
    kind: str = "stop"
    earliest: float | None = None
    latest: float | None = None


@dataclass
class _Anchor:
    time: float
    lat: float
    lon: float
    reached: int = 0  # probes already passed


@dataclass
class SpeedProfile:
    """Seconds per straight-line metre (the detour factor over the driven speed) as a function
    of the distance, learned from the van's own fixes: from starting points every
    ``ANCHOR_EVERY_S``, the time until the van is first ``PROBE_M[k]`` away in a straight line.
    First-passage times do not favour slow moments (a fixed time lag would: short straight-line
    distances in a fixed time are the slow ones). Recent driving weighs most (``HALF_LIFE_S``)."""

    time_s: list[float] = field(default_factory=lambda: [0.0] * len(PROBE_M))
    crow_m: list[float] = field(default_factory=lambda: [0.0] * len(PROBE_M))
    _anchors: deque[_Anchor] = field(default_factory=deque)
    _last: float = -math.inf
    _now_log: float = 0.0
    _now_weight: float = 0.0

    def _probe_pace(self, k: int) -> float:
        """The learned pace at probe ``k``, starting from a prior: probe 0's is
        ``PRIOR_CROW_MPS[0]``, each longer probe's is the one below it sped up by the prior's ratio
        (so a distance the van has not yet covered follows the van, not a guess)."""
        prior = 1 / PRIOR_CROW_MPS[0]
        for j in range(k + 1):
            if j > 0:
                prior *= PRIOR_CROW_MPS[j - 1] / PRIOR_CROW_MPS[j]
            pace = (self.time_s[j] + PRIOR_WEIGHT_S) / (self.crow_m[j] + PRIOR_WEIGHT_S / prior)
            prior = pace
        return pace

    def pace(self, distance_m: float, ahead_s: float = 0.0) -> float:
        """Seconds per straight-line metre for a leg of ``distance_m`` starting ``ahead_s``
        from now (interpolated in log distance between the probes, constant beyond them),
        scaled to the current regime, which fades for legs further ahead."""
        now = math.exp(math.exp(-ahead_s / NOW_FADE_S) * self._now_log / (self._now_weight + 1.0))
        if distance_m <= PROBE_M[0]:
            return now * self._probe_pace(0)
        k = bisect_right(PROBE_M, distance_m)
        if k >= len(PROBE_M):
            return now * self._probe_pace(len(PROBE_M) - 1)
        lo, hi = PROBE_M[k - 1], PROBE_M[k]
        f = math.log(distance_m / lo) / math.log(hi / lo)
        return now * ((1 - f) * self._probe_pace(k - 1) + f * self._probe_pace(k))

    def seconds(self, distance_m: float, ahead_s: float = 0.0) -> float:
        return distance_m * self.pace(distance_m, ahead_s)

    def observe(self, time: float, lat: float, lon: float) -> None:
        """Learn from a fix. A fix not newer than the newest seen is ignored (the profile only
        moves forward in event time)."""
        if not time > self._last:
            return
        if self._last > -math.inf:
            dt = time - self._last
            keep = 0.5 ** (dt / HALF_LIFE_S)
            self.time_s = [x * keep for x in self.time_s]
            self.crow_m = [x * keep for x in self.crow_m]
            now_keep = 0.5 ** (dt / NOW_HALF_LIFE_S)
            self._now_log *= now_keep
            self._now_weight *= now_keep
        self._last = time
        anchors = self._anchors
        while anchors and anchors[0].time < time - HISTORY_S:
            anchors.popleft()
        for anchor in anchors:
            if anchor.reached >= len(PROBE_M):
                continue
            away = great_circle_m(anchor.lat, anchor.lon, lat, lon)
            while anchor.reached < len(PROBE_M) and away >= PROBE_M[anchor.reached]:
                elapsed = time - anchor.time
                if anchor.reached == 0 and elapsed <= NOW_WINDOW_S:
                    seen = elapsed / PROBE_M[0]
                    self._now_log += math.log(max(seen, 1e-3) / self._probe_pace(0))
                    self._now_weight += 1.0
                self.time_s[anchor.reached] += time - anchor.time
                self.crow_m[anchor.reached] += PROBE_M[anchor.reached]
                anchor.reached += 1
        if not anchors or time - anchors[-1].time >= ANCHOR_EVERY_S:
            anchors.append(_Anchor(time, lat, lon))


@dataclass
class ServiceTimes:
    """Service time per stop kind: the median of the last observations, with the manifest's
    value counted ``SERVICE_PRIOR_COUNT`` times so one odd stop does not move it."""

    observed: dict[str, deque[float]] = field(default_factory=dict)

    def observe(self, kind: str, seconds: float) -> None:
        if math.isfinite(seconds) and seconds >= 0:
            self.observed.setdefault(kind, deque(maxlen=SERVICE_WINDOW)).append(seconds)

    def estimate(self, kind: str, manifest_s: float) -> float:
        seen = self.observed.get(kind)
        if not seen:
            return manifest_s
        values = sorted([manifest_s] * SERVICE_PRIOR_COUNT + list(seen))
        middle = len(values) // 2  # statistics.median's rule, without its 0.5 MB of imports
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


@dataclass
class EtaEstimator:
    """ETAs for a manifest's stops. ``matrix[a][b]`` (seconds, by stop id) is used between stops
    when present; the van's own leg to the next stop always uses the learned profile."""

    stops: dict[str, EtaStop]
    matrix: dict[str, dict[str, float]] | None = None
    profile: SpeedProfile = field(default_factory=SpeedProfile)
    service: ServiceTimes = field(default_factory=ServiceTimes)

    def on_fix(self, time: float, lat: float, lon: float) -> None:
        self.profile.observe(time, lat, lon)

    def served(self, stop_id: str, seconds: float) -> None:
        """The van spent ``seconds`` at ``stop_id`` (arrival to departure)."""
        stop = self.stops.get(stop_id)
        if stop is not None:
            self.service.observe(stop.kind, seconds)

    def travel_s(self, a: EtaStop, b: EtaStop, ahead_s: float = 0.0) -> float:
        """Travel from ``a`` to ``b`` for a leg starting ``ahead_s`` from now."""
        if self.matrix is not None:
            row = self.matrix.get(a.id)
            if row is not None and b.id in row:
                return row[b.id]
        return self.profile.seconds(great_circle_m(a.lat, a.lon, b.lat, b.lon), ahead_s)

    def etas(self, time: float, lat: float, lon: float, order: Sequence[str]) -> list[float]:
        """Arrival time at each stop of ``order`` (remaining stops in visit order), driving from
        (``lat``, ``lon``) at ``time``: waits for a window's start, then serves."""
        out: list[float] = []
        t = time
        previous: EtaStop | None = None
        for stop_id in order:
            stop = self.stops[stop_id]
            if previous is None:
                t += self.profile.seconds(great_circle_m(lat, lon, stop.lat, stop.lon))
            else:
                t += self.travel_s(previous, stop, t - time)
            out.append(t)
            if stop.earliest is not None and t < stop.earliest:
                t = stop.earliest
            t += self.service.estimate(stop.kind, stop.service_s)
            previous = stop
        return out

    def late(self, order: Sequence[str], etas: Sequence[float]) -> dict[str, float]:
        """Expected lateness (s) of each stop whose ETA passes its window end."""
        out: dict[str, float] = {}
        for stop_id, eta in zip(order, etas, strict=True):
            end = self.stops[stop_id].latest
            if end is not None and eta > end:
                out[stop_id] = eta - end
        return out
