"""The geofence detector against independent truth: hand-computed distances, the real Munich
drive's halts (found from the positions alone), the drift clouds of static receivers in gpsd's
regression logs, and properties over random walks (hypothesis)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.geofence import Fence, FenceIndex, Geofence, Rules, fences_from_geojson, run
from firmware_bridge.gps.serial_nmea import iter_fixes_from_file
from firmware_bridge.gps.tpv import read_trace
from protocols.errors import InputError
from protocols.records import iso_time

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
DRIVE = ROOT / "examples" / "munich-drive.jsonl"
M = 6371008.8 * math.pi / 180  # metres per degree of latitude


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    return lat + north_m / M, lon + east_m / (M * math.cos(math.radians(lat)))


def ground_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance: an independent measure of what the detector computes on its plane."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371008.8 * math.asin(math.sqrt(a))


def rect(lat: float, lon: float, west: float, east: float, south: float, north: float) -> list[list[float]]:
    """A closed lon/lat ring of the rectangle [west, east] x [south, north] metres around a point."""
    s, w = offset(lat, lon, west, south)
    n, e = offset(lat, lon, east, north)
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


def feature(fid: str, geometry: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"id": fid, **props}, "geometry": geometry}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


# --- geometry -------------------------------------------------------------------------------

LAT, LON = 48.137, 11.575


def test_signed_distance_to_a_square_with_a_hole_and_a_circle_matches_hand_computed_metres() -> None:
    fences = fences_from_geojson(
        collection(
            feature(
                "ring",
                {
                    "type": "Polygon",
                    "coordinates": [rect(LAT, LON, -200, 200, -200, 200), rect(LAT, LON, -50, 50, -50, 50)],
                },
            ),
            feature("c", {"type": "Point", "coordinates": [LON, LAT]}, radius_m=100),
        ),
        "test",
    )
    index = FenceIndex(fences, 20)
    cases = [  # (east, north) metres -> (ring distance, circle distance), by hand
        ((0, 0), -50, 100),  # in the hole: 50 m from its edge; the circle's centre
        ((0, 120), 70, -20),  # between hole (50) and outer (200): 70 and 80 -> 70
        ((0, 260), -60, -160),
        ((250, 250), -math.hypot(50, 50), 100 - math.hypot(250, 250)),
    ]
    for (east, north), ring_d, circle_d in cases:
        lat, lon = offset(LAT, LON, east, north)
        assert index.signed_distance(0, lat, lon) == pytest.approx(ring_d, abs=0.2)
        assert index.signed_distance(1, lat, lon) == pytest.approx(circle_d, abs=0.2)
        assert sorted(index.containing(lat, lon)) == [i for i, d in enumerate((ring_d, circle_d)) if d > 0]


def test_multipolygon_parts_are_each_inside() -> None:
    fences = fences_from_geojson(
        collection(
            feature(
                "two",
                {
                    "type": "MultiPolygon",
                    "coordinates": [[rect(LAT, LON, 0, 100, 0, 100)], [rect(LAT, LON, 300, 400, 0, 100)]],
                },
            )
        ),
        "t",
    )
    index = FenceIndex(fences)
    assert index.containing(*offset(LAT, LON, 50, 50)) == [0]
    assert index.containing(*offset(LAT, LON, 350, 50)) == [0]
    assert index.containing(*offset(LAT, LON, 200, 50)) == []


@settings(max_examples=200, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000), st.floats(5, 800), st.floats(5, 800)),
        min_size=1,
        max_size=40,
    ),
    points=st.lists(st.tuples(st.floats(-4000, 4000), st.floats(-4000, 4000)), min_size=1, max_size=30),
)
def test_index_agrees_with_an_axis_aligned_box_oracle(
    boxes: list[tuple[float, float, float, float]], points: list[tuple[float, float]]
) -> None:
    # Rectangles in lon/lat are axis-aligned: containment is two interval checks in degrees.
    rings = [rect(LAT, LON, x, x + w, y, y + h) for x, y, w, h in boxes]
    fences = [
        Fence(str(i), polygons=((tuple((p[0], p[1]) for p in r),),), lon=r[0][0], lat=r[0][1])
        for i, r in enumerate(rings)
    ]
    index = FenceIndex(fences, 20.0)
    for east, north in points:
        lat, lon = offset(LAT, LON, east, north)
        got = set(index.containing(lat, lon))
        for i, r in enumerate(rings):
            margin = min(lon - r[0][0], r[1][0] - lon, lat - r[0][1], r[2][1] - lat)
            if abs(margin) > 1e-9:  # points on a border may go either way
                assert (i in got) == (margin > 0), (i, margin)


def test_bad_geojson_names_the_field() -> None:
    with pytest.raises(InputError, match=r"features\[0\]\.properties\.id"):
        fences_from_geojson(collection({"type": "Feature", "properties": {}, "geometry": None}), "f")
    with pytest.raises(InputError, match="at least 4 positions"):
        fences_from_geojson(
            collection(feature("a", {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})), "f"
        )
    with pytest.raises(InputError, match="radius_m"):
        fences_from_geojson(collection(feature("a", {"type": "Point", "coordinates": [0, 0]})), "f")
    dup = feature("a", {"type": "Point", "coordinates": [0, 0]}, radius_m=5)
    with pytest.raises(InputError, match="used twice"):
        fences_from_geojson(collection(dup, dup), "f")


# --- rules on synthetic tracks ----------------------------------------------------------------


def circle(fid: str = "c", radius: float = 100.0, **kw: Any) -> Fence:
    return Fence(fid, lon=LON, lat=LAT, radius_m=radius, **kw)


def at(
    t: float, east: float, hdop: float | None = 1.0, mode: int = 3
) -> tuple[float, float, float, int, float | None]:
    lat, lon = offset(LAT, LON, east, 0.0)
    return (t, lat, lon, mode, hdop)


def test_enter_needs_depth_and_confirmation_and_carries_the_crossing_fix() -> None:
    # Radius 100, band 20: enter candidates at < 80 m from the centre, exit candidates > 120 m.
    track = [at(t, 205 - 10 * t) for t in range(0, 40)]  # 205 m east, moving west 10 m/s
    events = run([circle()], track)
    first_deep = next(f for f in track if ground_m(LAT, LON, f[1], f[2]) < 80)
    assert events[0][:3] == (first_deep[0], "c", "enter")
    assert (events[0][3], events[0][4]) == (first_deep[1], first_deep[2])
    # the way out to the west: first fix beyond 120 m
    first_out = next(f for f in track if f[0] > first_deep[0] and ground_m(LAT, LON, f[1], f[2]) > 120)
    assert events[1][:3] == (first_out[0], "c", "exit")
    assert len(events) == 2


def test_border_crossings_inside_the_band_are_not_events() -> None:
    track = [at(t, 100 + 15 * math.sin(t)) for t in range(600)]  # wobbling +-15 m across the border
    assert run([circle()], track) == []
    naive = Rules(band_m=0.0, confirm_fixes=1, confirm_s=0.0)
    assert len(run([circle()], track, naive)) > 50  # the same track without hysteresis flaps


def test_poor_and_stale_fixes_are_ignored() -> None:
    inside = [at(t, 0) for t in range(10)]
    bad = [at(10 + t, 500, hdop=20.0) for t in range(10)] + [at(20 + t, 500, mode=1) for t in range(5)]
    stale = [at(t, 500) for t in range(5)]  # times already seen
    geofence = Geofence([circle()])
    events = [e for t, la, lo, m, h in inside + bad + stale for e in geofence.update(t, la, lo, m, h)]
    assert [e[2] for e in events] == ["enter"]
    assert geofence.ignored == {"hdop": 10, "mode": 5, "stale": 5}
    two_d = Rules(require_3d=True)
    assert run([circle()], [at(t, 0, mode=2) for t in range(10)], two_d) == []


def test_a_tunnel_inside_a_fence_gives_no_exit_enter_pair_and_a_gap_restarts_a_run() -> None:
    track = [at(t, 0) for t in range(10)] + [at(600 + t, 10) for t in range(10)]
    assert [e[2] for e in run([circle()], track)] == ["enter"]
    # a run of two fixes, a gap, then one more: not three consecutive fixes within max_gap_s
    gap = [at(0, 500), at(1, 0), at(2, 0), at(100, 0)]
    assert run([circle()], gap) == []
    assert [e[2] for e in run([circle()], [*gap, at(101, 0), at(102, 0)])] == ["enter"]


def test_dwell_once_per_visit_at_the_first_fix_after_dwell_s() -> None:
    track = [at(t, 0) for t in range(0, 100, 5)] + [at(t, 500) for t in range(100, 130, 5)]
    track += [at(t, 0) for t in range(130, 200, 5)]
    events = run([circle(dwell_s=30)], track)
    assert [(e[0], e[2]) for e in events] == [
        (0, "enter"),
        (30, "dwell"),
        (100, "exit"),
        (130, "enter"),
        (160, "dwell"),
    ]


def test_driving_through_a_stop_is_no_arrival_stopping_is() -> None:
    through = [at(t, -200 + 10 * t) for t in range(41)]  # 20 s inside at 10 m/s
    assert run([circle(kind="stop")], through) == []
    assert [e[2] for e in run([circle(kind="zone")], through)] == ["enter", "exit"]
    halt = [at(t, -200 + 10 * t) for t in range(20)] + [at(t, 0) for t in range(20, 80)]
    events = run([circle(kind="stop")], halt)
    assert [(e[0], e[2]) for e in events] == [(12, "enter")]  # the crossing at 80 m from centre


def test_replacing_fences_keeps_state_by_id_without_an_event() -> None:
    geofence = Geofence([circle("a"), circle("b", 300)])
    for t in range(10):
        geofence.update(*at(t, 0)[:3])
    assert geofence.detector.inside() == ["a", "b"]
    geofence.replace([circle("b", 300), Fence("new", lon=LON, lat=LAT, radius_m=50)])
    events = [e for t in range(10, 20) for e in geofence.update(*at(t, 0)[:3])]
    assert [(e[1], e[2]) for e in events] == [("new", "enter")]
    assert geofence.detector.inside() == ["b", "new"]


# --- real data ---------------------------------------------------------------------------------


def halts(path: Path, within_m: float = 15.0, min_s: float = 40.0) -> list[tuple[int, int]]:
    """Index ranges where the van stayed within ``within_m`` of where it stopped for ``min_s``."""
    fixes = list(read_trace(path))
    out, i = [], 0
    while i < len(fixes):
        j = i
        while (
            j + 1 < len(fixes)
            and ground_m(fixes[i].lat, fixes[i].lon, fixes[j + 1].lat, fixes[j + 1].lon) < within_m
        ):
            j += 1
        if fixes[j].time - fixes[i].time >= min_s:
            out.append((i, j))
            i = j + 1
        else:
            i += 1
    return out


def test_munich_drive_stops_at_its_halts_and_passes_by_elsewhere(tmp_path: Path) -> None:
    fixes = list(read_trace(DRIVE))
    found = halts(DRIVE)
    assert len(found) >= 3
    features = []
    for k, (i, j) in enumerate(found):
        lat = sum(f.lat for f in fixes[i : j + 1]) / (j - i + 1)
        lon = sum(f.lon for f in fixes[i : j + 1]) / (j - i + 1)
        features.append(
            feature(
                f"halt{k}", {"type": "Point", "coordinates": [lon, lat]}, radius_m=40, kind="stop", dwell_s=30
            )
        )
    moving = fixes[300]  # the van drives through here at speed
    assert ground_m(moving.lat, moving.lon, fixes[290].lat, fixes[290].lon) > 50
    features.append(
        feature(
            "passby", {"type": "Point", "coordinates": [moving.lon, moving.lat]}, radius_m=40, kind="stop"
        )
    )
    features.append(feature("zone", {"type": "Point", "coordinates": [moving.lon, moving.lat]}, radius_m=40))
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(collection(*features)))
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "geofence", "--fences", str(path), str(DRIVE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert all(set(e) == {"time", "fence", "event"} for e in events)
    by_fence: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        by_fence.setdefault(e["fence"], []).append((e["event"], e["time"]))
    for k, (i, j) in enumerate(found):
        kinds = [k_ for k_, _ in by_fence[f"halt{k}"]]
        assert kinds == ["enter", "dwell", "exit"], (k, by_fence[f"halt{k}"])
        enter, exit_ = by_fence[f"halt{k}"][0][1], by_fence[f"halt{k}"][2][1]
        # the crossing lies before the halt (within the 40 m approach) and the exit after it
        assert iso_time(fixes[i].time - 30) <= enter <= iso_time(fixes[i].time), (k, enter)
        assert exit_ > iso_time(fixes[j].time)
    assert "passby" not in by_fence
    assert [k_ for k_, _ in by_fence["zone"]] == ["enter", "exit"]


STATIC = [
    "beidou-bd.log",
    "bu353-glonass.log",
    "firefly-II.log",
    "nmea-rtk.log",
    "quectel-l76k-nmea.log",
    "st-teseo-liv4f.log",
    "ublox-8.log",
    "ublox-neo-m9n-nmea.log",
    "venus634lp.log",
]


@pytest.mark.parametrize("name", STATIC)
def test_static_receiver_drift_across_a_border_gives_no_event(name: str) -> None:
    fixes = [f for f in iter_fixes_from_file(DATA / "nmea" / "gpsd" / name) if f.mode >= 2]
    lat = sorted(f.lat for f in fixes)[len(fixes) // 2]
    lon = sorted(f.lon for f in fixes)[len(fixes) // 2]
    spread = max(ground_m(lat, lon, f.lat, f.lon) for f in fixes)
    assert spread < 40  # a drift cloud of tens of metres
    # Borders through the cloud's median, each way: a 2 km square to the east, north, west, south.
    features = [
        feature(side, {"type": "Polygon", "coordinates": [rect(lat, lon, *box)]})
        for side, box in {
            "east": (0, 2000, -1000, 1000),
            "north": (-1000, 1000, 0, 2000),
            "west": (-2000, 0, -1000, 1000),
            "south": (-1000, 1000, -2000, 0),
        }.items()
    ]
    fences = fences_from_geojson(collection(*features), name)
    track = [(f.time, f.lat, f.lon, f.mode, f.hdop) for f in fixes]
    sides = {
        fid for f in fixes for fid in [fences[i].id for i in FenceIndex(fences).containing(f.lat, f.lon)]
    }
    assert len(sides) >= 2 or len(fixes) < 6  # the cloud does straddle borders
    assert run(fences, track) == []


def test_the_drift_clouds_do_flap_without_hysteresis() -> None:
    """The test above can fail: the same clouds and borders with no band and no confirmation."""
    naive = Rules(band_m=0.0, confirm_fixes=1, confirm_s=0.0, max_hdop=99.0)
    flaps = 0
    for name in STATIC:
        fixes = [f for f in iter_fixes_from_file(DATA / "nmea" / "gpsd" / name) if f.mode >= 2]
        lat = sorted(f.lat for f in fixes)[len(fixes) // 2]
        lon = sorted(f.lon for f in fixes)[len(fixes) // 2]
        fences = fences_from_geojson(
            collection(
                feature("east", {"type": "Polygon", "coordinates": [rect(lat, lon, 0, 2000, -1000, 1000)]})
            ),
            "t",
        )
        flaps += sum(
            e[2] == "exit"
            for e in run(fences, [(f.time, f.lat, f.lon, f.mode, f.hdop) for f in fixes], naive)
        )
    assert flaps >= 5


# --- properties -------------------------------------------------------------------------------

walks = st.lists(
    st.tuples(
        st.floats(0.5, 20.0),
        st.floats(-60.0, 60.0),
        st.floats(-60.0, 60.0),
        st.sampled_from([1.0, 1.0, 1.0, 9.0]),
    ),
    min_size=1,
    max_size=150,
)
fence_sets = st.lists(
    st.tuples(
        st.floats(-300, 300),
        st.floats(-300, 300),
        st.floats(30, 250),
        st.booleans(),
        st.sampled_from([0.0, 20.0]),
    ),
    min_size=1,
    max_size=6,
)


def build(spec: list[tuple[float, float, float, bool, float]]) -> list[Fence]:
    fences = []
    for k, (east, north, size, is_circle, dwell) in enumerate(spec):
        lat, lon = offset(LAT, LON, east, north)
        if is_circle:
            fences.append(Fence(f"f{k}", "stop" if k % 2 else "zone", dwell, lon=lon, lat=lat, radius_m=size))
        else:
            ring = tuple((p[0], p[1]) for p in rect(lat, lon, 0, size, 0, size / 2))
            fences.append(Fence(f"f{k}", "zone", dwell, ((ring,),), ring[0][0], ring[0][1]))
    return fences


def track_of(
    walk: list[tuple[float, float, float, float]],
) -> list[tuple[float, float, float, int, float | None]]:
    t, east, north = 0.0, 0.0, 0.0
    out: list[tuple[float, float, float, int, float | None]] = []
    for dt, de, dn, hdop in walk:
        t, east, north = t + dt, east + de, north + dn
        lat, lon = offset(LAT, LON, east, north)
        out.append((t, lat, lon, 3, hdop))
    return out


@settings(max_examples=150, deadline=None)
@given(spec=fence_sets, walk=walks, seed=st.randoms(use_true_random=False))
def test_properties_over_random_walks(spec: list[Any], walk: list[Any], seed: Any) -> None:
    fences = build(spec)
    track = track_of(walk)
    rules = Rules()
    events = run(fences, track, rules)
    # the same input twice gives the same events; the order of fences does not matter
    assert run(fences, track, rules) == events
    shuffled = list(fences)
    seed.shuffle(shuffled)
    assert run(shuffled, track, rules) == events
    index = FenceIndex(fences, rules.band_m)
    good = {(t, lat, lon) for t, lat, lon, _, hdop in track if hdop is not None and hdop <= rules.max_hdop}
    for fence_index, fence in enumerate(fences):
        mine = [e for e in events if e[1] == fence.id]
        inside = False
        dwelled = False
        for t, _, kind, lat, lon in mine:
            assert (t, lat, lon) in good  # every event stands on a good fix
            d = index.signed_distance(fence_index, lat, lon)
            if kind == "enter":
                assert not inside and d >= rules.band_m
                inside, dwelled = True, False
            elif kind == "exit":
                assert inside and d <= -rules.band_m
                inside = False
            else:
                assert inside and not dwelled and fence.dwell_s > 0
                dwelled = True


@settings(max_examples=60, deadline=None)
@given(spec=fence_sets, walk=walks, cut=st.integers(0, 150))
def test_swapping_in_the_same_fences_mid_run_changes_nothing(
    spec: list[Any], walk: list[Any], cut: int
) -> None:
    fences = build(spec)
    track = track_of(walk)
    geofence = Geofence(fences)
    events = []
    for k, (t, lat, lon, mode, hdop) in enumerate(track):
        if k == cut:
            geofence.replace(FenceIndex(list(reversed(fences)), geofence.rules.band_m))
        events += geofence.update(t, lat, lon, mode, hdop)
    assert events == run(fences, track)
