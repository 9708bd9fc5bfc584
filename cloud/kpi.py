"""Key figures per day, van and depot, computed from the stored records alone.

Definitions (each figure is None where its records are missing, never a made-up 0):

* ``on_time_rate``: of the stops served (first proof of delivery, else ``completed``) that have a
  delivery window, the share served within it (inclusive bounds);
* ``first_attempt_rate``: of the stops the van arrived at, the share completed before it first
  departed them;
* ``dwell_s``: per stop, first ``arrived`` to the next ``departed``; ``mean_dwell_s`` over stops;
* ``stops_per_hour``: completed stops per hour between the day's first and last fix;
* ``km``: great-circle distance along the day's fixes in time order, leaving out steps faster
  than ``MAX_STEP_SPEED_MS`` (a position jump is not a drive);
* ``kwh``: energy taken from the traction battery: the sum of the drops of VSS
  ``...StateOfCharge.CurrentEnergy`` (kWh); rises (charging) are not subtracted.

A depot's figures pool its vans' counts (rates are recomputed from the pooled counts, not
averaged). Days are UTC days.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.records import parse_iso_time

EARTH_RADIUS_M = 6_371_008.8
"""The IUGG mean Earth radius."""

MAX_STEP_SPEED_MS = 70.0
"""252 km/h: a step between two fixes implying more is a position jump, not distance driven."""

ENERGY = "Vehicle.Powertrain.TractionBattery.StateOfCharge.CurrentEnergy"

Window = tuple[float, float]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(slots=True)
class Counts:
    """The counts a rate is made of, so depots can pool their vans'."""

    served_in_window: int = 0
    served_with_window: int = 0
    first_attempt: int = 0
    attempted: int = 0
    completed: int = 0
    hours: float = 0.0
    metres: float = 0.0
    kwh: float | None = None
    dwell_s: dict[str, float] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.served_in_window += other.served_in_window
        self.served_with_window += other.served_with_window
        self.first_attempt += other.first_attempt
        self.attempted += other.attempted
        self.completed += other.completed
        self.hours += other.hours
        self.metres += other.metres
        if other.kwh is not None:
            self.kwh = (self.kwh or 0.0) + other.kwh
        self.dwell_s.update(other.dwell_s)

    def as_json(self) -> dict[str, Any]:
        def rate(n: int, d: int) -> float | None:
            return None if d == 0 else round(n / d, 4)

        dwell = list(self.dwell_s.values())
        return {
            "on_time_rate": rate(self.served_in_window, self.served_with_window),
            "served_with_window": self.served_with_window,
            "first_attempt_rate": rate(self.first_attempt, self.attempted),
            "attempted": self.attempted,
            "completed": self.completed,
            "dwell_s": {k: round(v, 1) for k, v in sorted(self.dwell_s.items())},
            "mean_dwell_s": round(sum(dwell) / len(dwell), 1) if dwell else None,
            "stops_per_hour": round(self.completed / self.hours, 2) if self.hours > 0 else None,
            "km": round(self.metres / 1000, 3),
            "kwh": None if self.kwh is None else round(self.kwh, 3),
        }


def _event_time(record: Mapping[str, Any]) -> tuple[float, int]:
    """Signals carry ``t`` (seconds), the other kinds ``time`` (ISO 8601): one time axis for both,
    so energy drops are taken in the order they happened, not the order they were stored."""
    t = record.get("t")
    return (float(t) if t is not None else parse_iso_time(record["time"]), record["seq"])


def van_counts(records: Iterable[Mapping[str, Any]], windows: Mapping[tuple[str, str], Window]) -> Counts:
    """One van's counts from its records of one day (export JSON form, any order)."""
    rows = sorted(records, key=_event_time)
    c = Counts()
    fixes = [r for r in rows if r["kind"] == "fix"]
    for a, b in itertools.pairwise(fixes):
        d = haversine_m(a["lat"], a["lon"], b["lat"], b["lon"])
        dt = parse_iso_time(b["time"]) - parse_iso_time(a["time"])
        if dt > 0 and d / dt <= MAX_STEP_SPEED_MS:
            c.metres += d
    if len(fixes) >= 2:
        c.hours = (parse_iso_time(fixes[-1]["time"]) - parse_iso_time(fixes[0]["time"])) / 3600
    energy = [r["value"] for r in rows if r["kind"] == "signal" and r["signal"] == ENERGY]
    if energy:
        c.kwh = sum(max(0.0, a - b) for a, b in itertools.pairwise(energy))
    served: dict[tuple[str, str], float] = {}
    status: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for r in rows:
        if r["kind"] == "delivery":
            served.setdefault((r["manifest"], r["stop"]), parse_iso_time(r["time"]))
        elif r["kind"] == "stop_update":
            status.setdefault((r["manifest"], r["stop"]), []).append((r["status"], parse_iso_time(r["time"])))
    for key, updates in status.items():
        names = [s for s, _ in updates]
        if "completed" in names:
            c.completed += 1
            served.setdefault(key, next(t for s, t in updates if s == "completed"))
        if "arrived" in names:
            c.attempted += 1
            first_departed = names.index("departed") if "departed" in names else len(names)
            if "completed" in names[:first_departed]:
                c.first_attempt += 1
            arrived = next(t for s, t in updates if s == "arrived")
            left = [t for s, t in updates if s == "departed" and t >= arrived]
            if left:
                c.dwell_s[f"{key[0]}/{key[1]}"] = left[0] - arrived
    for key, t in served.items():
        window = windows.get(key)
        if window is not None:
            c.served_with_window += 1
            c.served_in_window += window[0] <= t <= window[1]
    return c


def day_kpis(
    records: Iterable[Mapping[str, Any]],
    windows: Mapping[tuple[str, str], Window],
    depots: Mapping[str, str],
) -> dict[str, Any]:
    """``{"vans": {vehicle: figures}, "depots": {depot: figures}}`` for one day's records of every
    van; ``depots`` maps a manifest id to its depot (a van without a known manifest: ``unknown``)."""
    by_van: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_van.setdefault(r["vehicle"], []).append(r)
    vans: dict[str, Any] = {}
    pooled: dict[str, Counts] = {}
    for vehicle, rows in sorted(by_van.items()):
        counts = van_counts(rows, windows)
        vans[vehicle] = counts.as_json()
        manifests = [r["manifest"] for r in rows if r["kind"] in ("stop_update", "delivery", "eta")]
        depot = next((depots[m] for m in manifests if m in depots), "unknown")
        vans[vehicle]["depot"] = depot
        pooled.setdefault(depot, Counts()).add(counts)
    return {"vans": vans, "depots": {d: c.as_json() for d, c in sorted(pooled.items())}}
