"""KPIs of a small hand-written day, through a real collector (real SQLite store, the ingest
path, ``GET /api/v1/kpis`` over loopback with manifests in ``--manifests``), against figures
worked out by hand below. Distances are chosen along a meridian and the equator, where the
great-circle distance is exactly ``R * angle``, so the expected kilometres need no haversine."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud import kpi
from cloud.collector import Collector
from cloud.ingest import Ingest
from cloud.store import SqliteStore
from cloud.tokens import Tokens
from protocols import convert, wire
from protocols.records import Delivery, Fix, Record, Signal, StopUpdate, iso_time

T0 = 1_410_325_200.0  # 2014-09-10T05:00:00Z
DAY = "2014-09-10"
R = 6_371_008.8
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
ENERGY = "Vehicle.Powertrain.TractionBattery.StateOfCharge.CurrentEnergy"


def manifest(mid: str, vehicle: str, depot: str, windows: dict[str, tuple[float, float]]) -> dict[str, Any]:
    return {
        "manifest_id": mid,
        "vehicle": vehicle,
        "depot": {"id": depot, "lat": 48.1, "lon": 11.4, "radius_m": 100},
        "stops": [
            {
                "id": stop,
                "lat": 48.15,
                "lon": 11.5,
                "radius_m": 40,
                "service_s": 60,
                "parcels": [],
                "window": [iso_time(a), iso_time(b)],
            }
            for stop, (a, b) in windows.items()
        ],
    }


def updates(mid: str, stop: str, *steps: tuple[float, str]) -> list[Record]:
    return [StopUpdate(T0 + dt, mid, stop, status) for dt, status in steps]


def delivered(mid: str, stop: str, dt: float) -> Delivery:
    return Delivery(T0 + dt, mid, stop, f"{stop}-P1", f"00{stop}", 48.15, 11.5, 3)


# van-1 (manifest m1, depot north): four stops.
#   S1 window [0, 900]: arrived 300, proof of delivery 900 (the window's last second: on time,
#      bounds inclusive; its completed at 950 would be late), departed 1000. dwell 700.
#   S2 window [0, 1000]: arrived 1100, completed 1150 (no proof): late. dwell 200.
#   S3 window [1500, 2000]: arrived 1600, departed 1700 without completing (second attempt),
#      arrived 3000, completed 3100: late, not first attempt. dwell 100 (first visit).
#   S4 window [3000, 4000]: arrived 3400, never completed, never left: attempted, no dwell.
# on time 1 of 3 served; first attempt 2 of 4 arrived; 3 completed in 1 h of fixes.
# Fixes: north along 11.5 E, 0.01 deg steps, one 1-second 1-degree jump (not driven);
# driven 0.04 deg of meridian. A fix of the day before (elsewhere) must not count.
# Energy 60 -> 58.5 -> 57 -> 62 (charging) -> 60.5: drops 1.5 + 1.5 + 1.5 = 4.5 kWh.
M1 = {"S1": (T0, T0 + 900), "S2": (T0, T0 + 1000), "S3": (T0 + 1500, T0 + 2000), "S4": (T0 + 3000, T0 + 4000)}
VAN1: list[Record] = [
    Fix(T0 - 86_400, 3, 52.5, 13.4),
    Fix(T0, 3, 48.10, 11.5),
    Fix(T0 + 600, 3, 48.11, 11.5),
    Fix(T0 + 1200, 3, 48.12, 11.5),
    Fix(T0 + 1800, 3, 48.13, 11.5),
    Fix(T0 + 1801, 3, 49.13, 11.5),
    Fix(T0 + 3600, 3, 49.14, 11.5),
    Signal(T0, ENERGY, 60.0),
    Signal(T0 + 1, SOC, 80.0),
    Signal(T0 + 600, ENERGY, 58.5),
    Signal(T0 + 1200, ENERGY, 57.0),
    Signal(T0 + 1201, SOC, 70.0),
    Signal(T0 + 1800, ENERGY, 62.0),
    Signal(T0 + 3600, ENERGY, 60.5),
    *updates("m1", "S1", (300, "arrived"), (950, "completed"), (1000, "departed")),
    delivered("m1", "S1", 900),
    *updates("m1", "S2", (1100, "arrived"), (1150, "completed"), (1300, "departed")),
    *updates("m1", "S3", (1600, "arrived"), (1700, "departed"), (3000, "arrived"), (3100, "completed")),
    *updates("m1", "S3", (3200, "departed")),
    *updates("m1", "S4", (3400, "arrived")),
]
# van-2 (manifest m2, depot north): one stop T1 window [0, 3600], arrived 900, proof 1000,
# completed 1010, departed 1100: on time, first attempt, dwell 200. Standing still for 30 min:
# 0 km, 1 completed / 0.5 h. No energy signal: kWh unknown (None), not 0.
M2 = {"T1": (T0, T0 + 3600)}
VAN2: list[Record] = [
    Fix(T0, 3, 48.0, 11.0),
    Fix(T0 + 1800, 3, 48.0, 11.0),
    *updates("m2", "T1", (900, "arrived"), (1010, "completed"), (1100, "departed")),
    delivered("m2", "T1", 1000),
]
# van-3 (no manifest): 0.01 deg along the equator in 100 s; every stop figure unknown.
VAN3: list[Record] = [Fix(T0, 3, 0.0, 0.0), Fix(T0 + 100, 3, 0.0, 0.01)]


def metres(degrees: float) -> float:
    return R * degrees * math.pi / 180


VAN1_FIGURES = {
    "on_time_rate": round(1 / 3, 4),
    "served_with_window": 3,
    "first_attempt_rate": 0.5,
    "attempted": 4,
    "completed": 3,
    "dwell_s": {"m1/S1": 700.0, "m1/S2": 200.0, "m1/S3": 100.0},
    "mean_dwell_s": round(1000 / 3, 1),
    "stops_per_hour": 3.0,
    "km": round(metres(0.04) / 1000, 3),
    "kwh": 4.5,
    "depot": "north",
}
VAN2_FIGURES = {
    "on_time_rate": 1.0,
    "served_with_window": 1,
    "first_attempt_rate": 1.0,
    "attempted": 1,
    "completed": 1,
    "dwell_s": {"m2/T1": 200.0},
    "mean_dwell_s": 200.0,
    "stops_per_hour": 2.0,
    "km": 0.0,
    "kwh": None,
    "depot": "north",
}
VAN3_FIGURES: dict[str, Any] = {
    "on_time_rate": None,
    "served_with_window": 0,
    "first_attempt_rate": None,
    "attempted": 0,
    "completed": 0,
    "dwell_s": {},
    "mean_dwell_s": None,
    "stops_per_hour": 0.0,
    "km": round(metres(0.01) / 1000, 3),
    "kwh": None,
    "depot": "unknown",
}
NORTH = {  # pooled counts, rates recomputed from them
    "on_time_rate": 0.5,  # 2 of 4
    "served_with_window": 4,
    "first_attempt_rate": 0.6,  # 3 of 5
    "attempted": 5,
    "completed": 4,
    "dwell_s": {"m1/S1": 700.0, "m1/S2": 200.0, "m1/S3": 100.0, "m2/T1": 200.0},
    "mean_dwell_s": 300.0,
    "stops_per_hour": round(4 / 1.5, 2),
    "km": round(metres(0.04) / 1000, 3),
    "kwh": 4.5,
}


@pytest.fixture
def tower(tmp_path: Path) -> Iterator[tuple[str, str, Collector]]:
    db = tmp_path / "collector.db"
    plans = tmp_path / "manifests"
    plans.mkdir()
    (plans / "m1.json").write_text(json.dumps(manifest("m1", "van-1", "north", M1)))
    (plans / "m2.json").write_text(json.dumps(manifest("m2", "van-2", "north", M2)))
    collector = Collector(db, ingest=Ingest(SqliteStore(db)), http_addr="127.0.0.1:0", manifests=plans)
    collector.start()
    try:
        yield f"http://127.0.0.1:{collector.http.bound_port}", Tokens(db).create("read"), collector
    finally:
        collector.stop()


def send(collector: Collector, vehicle: str, records: list[Record]) -> None:
    bodies = [convert.encode(seq, r) for seq, r in enumerate(records, 1)]
    ack = collector.ingest.handle(wire.encode_batch(vehicle, 1, bodies), vehicle)
    assert not ack.rejected and not ack.quarantined, ack


def get(base: str, token: str, path: str) -> Any:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_kpis_of_a_hand_written_day(tower: tuple[str, str, Collector]) -> None:
    base, token, collector = tower
    # stored out of time order: the figures follow event time, not arrival
    send(collector, "van-1", list(reversed(VAN1)))
    send(collector, "van-2", VAN2)
    send(collector, "van-3", VAN3)
    got = get(base, token, f"/api/v1/kpis?day={DAY}")
    assert got["day"] == DAY
    assert list(got["vans"]) == ["van-1", "van-2", "van-3"]
    assert got["vans"]["van-1"] == VAN1_FIGURES
    assert got["vans"]["van-2"] == VAN2_FIGURES
    assert got["vans"]["van-3"] == VAN3_FIGURES
    unknown = {k: v for k, v in VAN3_FIGURES.items() if k != "depot"}
    assert got["depots"] == {"north": NORTH, "unknown": unknown}
    # the day before holds only van-1's lone fix: no distance, no hours, no stops
    before = get(base, token, "/api/v1/kpis?day=2014-09-09")["vans"]
    assert list(before) == ["van-1"]
    assert before["van-1"]["km"] == 0.0 and before["van-1"]["stops_per_hour"] is None


def export_form(vehicle: str, records: list[Record]) -> list[dict[str, Any]]:
    return [{"vehicle": vehicle, **convert.to_json(convert.to_pb(i, r))} for i, r in enumerate(records, 1)]


@settings(max_examples=50, deadline=None)
@given(st.permutations(export_form("van-1", VAN1[1:])))
def test_van_figures_do_not_depend_on_record_order(rows: list[dict[str, Any]]) -> None:
    """Stores return records in any order (ties broken by seq); the figures are the same."""
    figures = kpi.van_counts(rows, {("m1", s): w for s, w in M1.items()}).as_json()
    assert figures == {k: v for k, v in VAN1_FIGURES.items() if k != "depot"}
