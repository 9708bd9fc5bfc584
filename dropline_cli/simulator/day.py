"""A delivery day as a timeline: pure and deterministic (no clock, no I/O), so a scenario's effect
on the timeline can be checked by itself and the same day can be played at any speed.

The van leaves the depot, drives straight legs at ``speed_mps`` to each stop of its manifest
(1 Hz receiver epochs along the way), stops for the stop's ``service_s`` with the ignition off and
scans each parcel inside the stop's fence, and returns. Scenarios (:data:`SCENARIOS`) change the
day the way the real event would.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from dropline_cli.simulator.canbus import soc_after
from dropline_cli.simulator.nmea import Position

SCENARIOS = (
    "tunnel",  # no fix for 60 s on the second leg: the receiver talks, without a position
    "network-outage",  # the uplink is cut for the middle third of the day (the player's job)
    "late-stop",  # 20 minutes stuck before the last stop: it is reached after its window
    "extended-dwell",  # the first stop takes five times its service time
    "scan-outside-fence",  # one parcel of the first stop is scanned 300 m down the road
    "wrong-stop",  # the first stop's first parcel is left in the van and scanned at the second
    "battery",  # the day starts at 9 % state of charge: it will not last
    "agent-restart",  # the agent is killed mid-day and started again (the player's job)
)
EARTH_M = 6_371_008.8
DEPOT = (48.128829, 11.433009)


@dataclass(frozen=True)
class Step:
    """At ``t`` (Unix seconds): a receiver epoch (``position`` None in a tunnel), the CAN state,
    and the scans made in that second."""

    t: float
    position: Position | None
    soc_pct: float
    speed_kmh: float
    ignition: bool
    scans: tuple[str, ...] = ()


@dataclass
class Day:
    vehicle: str
    manifest: dict[str, object]
    steps: list[Step] = field(default_factory=list)
    outage: tuple[float, float] | None = None
    restart_at: float | None = None


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    dlat = math.degrees(north_m / EARTH_M)
    dlon = math.degrees(east_m / (EARTH_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = math.radians(b[0] - a[0]) * EARTH_M
    east = math.radians(b[1] - a[1]) * EARTH_M * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sscc(n: int) -> str:
    """A valid SSCC (extension 0, company 4012345, serial ``n``) with its GS1 mod-10 check digit."""
    body = f"0401234{n:010d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def plan(
    vehicle: str,
    start: float,
    stops: int = 3,
    scenarios: frozenset[str] = frozenset(),
    *,
    leg_m: float = 600.0,
    speed_mps: float = 10.0,
    service_s: int = 60,
    bearing_deg: float = 0.0,
) -> Day:
    """The day of one van: ``stops`` stops ``leg_m`` apart on a loop that starts at the depot."""
    unknown = scenarios - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    places = []
    for i in range(stops):
        angle = math.radians(bearing_deg + 360.0 * (i + 1) / (stops + 1))
        r = leg_m * (1 + i % 2 * 0.3)
        places.append(_offset(*DEPOT, r * math.cos(angle), r * math.sin(angle)))
    eta = start
    stop_docs = []
    prev = DEPOT
    for i, p in enumerate(places):
        eta += _distance(prev, p) / speed_mps
        stop_docs.append(
            {
                "id": f"S{i + 1}",
                "lat": round(p[0], 7),
                "lon": round(p[1], 7),
                "radius_m": 40,
                "window": [_iso(eta - 300), _iso(eta + 600)],
                "service_s": service_s,
                "parcels": [sscc(100 * (i + 1) + k) for k in range(2)],
            }
        )
        eta += service_s
        prev = p
    manifest: dict[str, object] = {
        "manifest_id": f"{vehicle}-{_iso(start)[:10]}",
        "vehicle": vehicle,
        "depot": {"id": "depot", "lat": DEPOT[0], "lon": DEPOT[1], "radius_m": 100},
        "stops": stop_docs,
    }
    day = Day(vehicle, manifest)
    soc = 9.0 if "battery" in scenarios else 80.0
    t = start
    here = DEPOT
    route = [*places, DEPOT]
    for leg, target in enumerate(route):
        if leg == len(places) - 1 and "late-stop" in scenarios:
            for _ in range(1200):  # stuck in traffic with the engine on
                day.steps.append(Step(t, Position(here[0], here[1]), soc, 0.0, True))
                t += 1.0
        dist = _distance(here, target)
        n = max(1, math.ceil(dist / speed_mps))
        tunnel = range(5, 65) if leg == 1 and "tunnel" in scenarios else range(0)
        for k in range(1, n + 1):
            lat = here[0] + (target[0] - here[0]) * k / n
            lon = here[1] + (target[1] - here[1]) * k / n
            track = math.degrees(math.atan2(target[1] - here[1], target[0] - here[0])) % 360
            soc = soc_after(soc, dist / n, speed_mps, 0.2, 64.0 if "battery" not in scenarios else 8.0)
            pos = None if k in tunnel else Position(lat, lon, speed_mps, track)
            day.steps.append(Step(t, pos, soc, speed_mps * 3.6, True))
            t += 1.0
        here = target
        if leg == len(places):
            break
        stop = stop_docs[leg]
        parcels = list(stop["parcels"])  # type: ignore[call-overload]
        if "wrong-stop" in scenarios and leg == 0:
            parcels.pop(0)  # left in the van: scanned at the second stop instead
        if "wrong-stop" in scenarios and leg == 1:
            parcels.append(str(stop_docs[0]["parcels"][0]))  # type: ignore[index]
        outside = parcels.pop() if "scan-outside-fence" in scenarios and leg == 0 else None
        dwell = service_s * (5 if "extended-dwell" in scenarios and leg == 0 else 1)
        scan_at = {5 + 3 * j: p for j, p in enumerate(parcels)}
        for s in range(dwell):
            scans = (scan_at[s],) if s in scan_at else ()
            day.steps.append(Step(t, Position(here[0], here[1]), soc, 0.0, False, scans))
            t += 1.0
        if outside is not None:  # walked 300 m down the road: scanned there, in the middle of a
            # 30 s stay, so the scan is away from the stop however late a loaded machine delivers it
            away = _offset(here[0], here[1], 300.0, 0.0)
            for k in range(30):
                day.steps.append(Step(t, Position(*away), soc, 0.0, False, (outside,) if k == 15 else ()))
                t += 1.0
    if "network-outage" in scenarios:
        span = t - start
        day.outage = (start + span / 3, start + 2 * span / 3)
    if "agent-restart" in scenarios:
        day.restart_at = start + (t - start) / 2
    return day
