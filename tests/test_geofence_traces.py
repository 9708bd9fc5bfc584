"""The geofence detector's properties on REAL traces (the Munich drive, barefoot's Munich taxi,
GPSBabel's Rome and Stockholm logs, with their own fix quality where they carry it), fences of
every shape placed at random along them (hypothesis):

* per fence, events alternate enter / exit (a dwell only inside, once per visit);
* every event stands on a good fix beyond the band, and the confirmation run behind it is there;
* the order of the features in the GeoJSON does not change the output;
* the same day replayed gives the same events;
* the detector (grid, active list, kept border distances) decides exactly what the rules decide
  when each fence is judged alone on its exact distance at every fix (a reference written here
  from the module's rules, with no index), and the compiled module agrees with plain Python.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent.geofence
from agent.geofence import Fence, FenceIndex, Rules, fences_from_geojson, run
from firmware_bridge.gps.tpv import read_trace

ROOT = Path(__file__).parent.parent
TRACES = Path(__file__).parent / "data" / "traces"
M = 6371008.8 * math.pi / 180  # metres per degree of latitude

Fix5 = tuple[float, float, float, int, float | None]


def _gpx(path: Path) -> list[Fix5]:
    ns = {"g": "http://www.topografix.com/GPX/1/0"}
    out: list[Fix5] = []
    for pt in ET.parse(path).getroot().iterfind(".//g:trkpt", ns):
        t = datetime.fromisoformat((pt.findtext("g:time", namespaces=ns) or "").replace("Z", "+00:00"))
        fix = pt.findtext("g:fix", namespaces=ns)
        hdop = pt.findtext("g:hdop", namespaces=ns)
        mode = {"none": 1, "2d": 2, "3d": 3}.get(fix or "", 3)
        out.append(
            (
                t.timestamp(),
                float(pt.attrib["lat"]),
                float(pt.attrib["lon"]),
                mode,
                float(hdop) if hdop else None,
            )
        )
    return out


def _barefoot(path: Path) -> list[Fix5]:
    import json

    out: list[Fix5] = []
    for row in json.loads(path.read_text()):
        lon, lat = (float(v) for v in row["point"].removeprefix("POINT(").removesuffix(")").split())
        t = datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S%z").timestamp()
        out.append((t, lat, lon, 2, None))
    return out


@cache
def trace(name: str) -> list[Fix5]:
    if name == "munich-drive":
        return [
            (f.time, f.lat, f.lon, f.mode, f.hdop)
            for f in read_trace(ROOT / "examples" / "munich-drive.jsonl")
        ]
    if name.startswith("x0001"):
        return _barefoot(TRACES / "barefoot_munich" / f"{name}.json")
    return _gpx(TRACES / "gpsbabel" / f"{name}.gpx")


NAMES = ["munich-drive", "x0001-001", "x0001-015", "mtk_logger_m241_rome", "sbn_stockholm"]


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    return lat + north_m / M, lon + east_m / (M * math.cos(math.radians(lat)))


def ring(lat: float, lon: float, points: list[tuple[float, float]]) -> list[list[float]]:
    out = [list(offset(lat, lon, e, n))[::-1] for e, n in points]
    return [*out, out[0]]


def geometry(
    lat: float, lon: float, shape: str, size: float, rng: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A GeoJSON geometry of ``shape`` about ``size`` metres across, and its extra properties."""
    if shape == "circle":
        return {"type": "Point", "coordinates": [lon, lat]}, {"radius_m": size}
    if shape == "star":
        sides = rng.randint(5, 24)
        pts = [
            (
                size * rng.uniform(0.4, 1.0) * math.cos(2 * math.pi * v / sides),
                size * rng.uniform(0.4, 1.0) * math.sin(2 * math.pi * v / sides),
            )
            for v in range(sides)
        ]
        return {"type": "Polygon", "coordinates": [ring(lat, lon, pts)]}, {}
    outer = [(-size, -size), (size, -size), (size, size), (-size, size)]
    hole = [(-size / 3, -size / 3), (-size / 3, size / 3), (size / 3, size / 3), (size / 3, -size / 3)]
    if shape == "donut":
        return {"type": "Polygon", "coordinates": [ring(lat, lon, outer), ring(lat, lon, hole)]}, {}
    east = [(e + 2.5 * size, n) for e, n in outer]
    return {"type": "MultiPolygon", "coordinates": [[ring(lat, lon, outer)], [ring(lat, lon, east)]]}, {}


fence_specs = st.lists(
    st.tuples(
        st.floats(0, 1),  # where along the window
        st.floats(-120, 120),  # east of that fix, m
        st.floats(-120, 120),  # north
        st.floats(15, 300),  # size, m
        st.sampled_from(["circle", "star", "donut", "multi"]),
        st.sampled_from(["zone", "stop", "restricted"]),
        st.sampled_from([0.0, 30.0, 120.0]),  # dwell_s
    ),
    min_size=1,
    max_size=25,
)
rule_sets = st.builds(
    Rules,
    band_m=st.sampled_from([0.0, 5.0, 20.0, 40.0]),
    confirm_fixes=st.integers(1, 4),
    confirm_s=st.sampled_from([0.0, 2.0, 10.0]),
    arrive_s=st.sampled_from([0.0, 30.0]),
    max_gap_s=st.sampled_from([5.0, 10.0, 60.0]),
    max_hdop=st.sampled_from([2.0, 5.0]),
    require_3d=st.booleans(),
)


@st.composite
def days(draw: Any) -> tuple[list[Fix5], dict[str, Any], Rules]:
    """A window of a real trace (some fixes spoiled: no fix, high HDOP), fences along it."""
    name = draw(st.sampled_from(NAMES))
    fixes = trace(name)
    length = draw(st.integers(30, 700))
    start = draw(st.integers(0, max(0, len(fixes) - length)))
    window = list(fixes[start : start + length])
    for k in draw(st.lists(st.integers(0, len(window) - 1), max_size=40)):
        t, lat, lon, _, _ = window[k]
        window[k] = (t, lat, lon, *draw(st.sampled_from([(1, None), (3, 9.9), (2, 3.0)])))
    rng = draw(st.randoms(use_true_random=False))
    features = []
    for n, (where, east, north, size, shape, kind, dwell) in enumerate(draw(fence_specs)):
        _, lat, lon, _, _ = window[min(len(window) - 1, int(where * len(window)))]
        lat, lon = offset(lat, lon, east, north)
        geom, props = geometry(lat, lon, shape, size, rng)
        props |= {"id": f"{shape}-{n}", "kind": kind, "dwell_s": dwell}
        features.append({"type": "Feature", "properties": props, "geometry": geom})
    return window, {"type": "FeatureCollection", "features": features}, draw(rule_sets)


def good_fixes(fixes: list[Fix5], rules: Rules) -> list[tuple[float, float, float]]:
    """The fixes the rules count, written from the rules: mode, HDOP, strictly newer."""
    out: list[tuple[float, float, float]] = []
    last = -math.inf
    for t, lat, lon, mode, hdop in fixes:
        if mode < (3 if rules.require_3d else 2) or (hdop is not None and not hdop <= rules.max_hdop):
            continue
        if t > last:
            out.append((t, lat, lon))
            last = t
    return out


def reference(
    fences: list[Fence], fixes: list[Fix5], rules: Rules
) -> list[tuple[float, str, str, float, float]]:
    """The rules applied to each fence alone on its exact signed distance at every good fix: no
    grid, no boxes, no kept distances. An event carries its run's first fix but is decided at a
    later one: the output is in the order decided."""
    index = FenceIndex(fences, rules.band_m)
    good = good_fixes(fixes, rules)
    band = rules.band_m
    events = []
    for i, fence in enumerate(fences):
        inside = dwelled = False
        run_n, run_t0, run_last, run_pos, enter_t = 0, 0.0, 0.0, (0.0, 0.0), 0.0
        for at, (t, lat, lon) in enumerate(good):
            d = index.signed_distance(i, lat, lon)
            if (d <= -band) if inside else (d >= band):
                if run_n == 0 or t - run_last > rules.max_gap_s:
                    run_n, run_t0, run_pos = 1, t, (lat, lon)
                else:
                    run_n += 1
                run_last = t
                need = (
                    rules.confirm_s
                    if inside or fence.kind != "stop"
                    else max(rules.confirm_s, rules.arrive_s)
                )
                if run_n >= max(1, rules.confirm_fixes) and t - run_t0 >= need:
                    run_n = 0
                    events.append((at, (run_t0, fence.id, "exit" if inside else "enter", *run_pos)))
                    inside = not inside
                    if inside:
                        dwelled, enter_t = False, run_t0
            else:
                run_n = 0
            if inside and not dwelled and fence.dwell_s > 0 and d > -band and t - enter_t >= fence.dwell_s:
                dwelled = True
                events.append((at, (t, fence.id, "dwell", lat, lon)))
    # in the order decided: by the fix that decided them, then (time, fence, enter < dwell < exit)
    rank = {"enter": 0, "dwell": 1, "exit": 2}
    return [e for _, e in sorted(events, key=lambda a: (a[0], a[1][0], a[1][1], rank[a[1][2]]))]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(day=days(), seed=st.randoms(use_true_random=False))
def test_properties_on_real_traces(day: tuple[list[Fix5], dict[str, Any], Rules], seed: Any) -> None:
    fixes, doc, rules = day
    fences = fences_from_geojson(doc, "fences")
    events = run(fences, fixes, rules)
    # the same day replayed gives the same events
    assert run(fences, fixes, rules) == events
    # the order of the features in the file does not matter
    shuffled = dict(doc, features=seed.sample(doc["features"], len(doc["features"])))
    assert run(fences_from_geojson(shuffled, "fences"), fixes, rules) == events
    # exactly what the rules decide for each fence alone
    assert events == reference(fences, fixes, rules)

    index = FenceIndex(fences, rules.band_m)
    good = good_fixes(fixes, rules)
    at = {(t, lat, lon): k for k, (t, lat, lon) in enumerate(good)}
    for i, fence in enumerate(fences):
        inside = dwelled = False
        for t, _, kind, lat, lon in (e for e in events if e[1] == fence.id):
            k = at[(t, lat, lon)]  # every event stands on a good fix
            d = index.signed_distance(i, lat, lon)
            if kind == "dwell":
                assert inside and not dwelled and fence.dwell_s > 0 and d > -rules.band_m
                dwelled = True
                continue
            assert kind == ("exit" if inside else "enter")  # alternation
            assert d >= rules.band_m if kind == "enter" else d <= -rules.band_m
            # the confirmation run behind it: consecutive good fixes beyond the band, no long gap
            streak = [good[k]]
            for t2, lat2, lon2 in good[k + 1 :]:
                if len(streak) >= max(1, rules.confirm_fixes) and streak[-1][0] - t >= rules.confirm_s:
                    break
                d2 = index.signed_distance(i, lat2, lon2)
                assert d2 >= rules.band_m if kind == "enter" else d2 <= -rules.band_m
                assert t2 - streak[-1][0] <= rules.max_gap_s
                streak.append((t2, lat2, lon2))
            assert len(streak) >= max(1, rules.confirm_fixes) and streak[-1][0] - t >= rules.confirm_s
            inside, dwelled = kind == "enter", False


def _plain_python() -> ModuleType:
    spec = importlib.util.spec_from_file_location("geofence_plain", ROOT / "agent" / "geofence.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["geofence_plain"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not agent.geofence.__file__.endswith(".so"), reason="the extension is not built")
def test_compiled_and_plain_python_decide_the_same_on_the_munich_drive() -> None:
    plain = _plain_python()
    fixes = trace("munich-drive")
    rng = __import__("random").Random(3)
    features = []
    for n in range(300):
        _, lat, lon, _, _ = fixes[rng.randrange(len(fixes))]
        lat, lon = offset(lat, lon, rng.uniform(-100, 100), rng.uniform(-100, 100))
        geom, props = geometry(
            lat, lon, rng.choice(["circle", "star", "donut", "multi"]), rng.uniform(15, 200), rng
        )
        props |= {"id": f"f{n}", "kind": rng.choice(["zone", "stop"]), "dwell_s": rng.choice([0.0, 60.0])}
        features.append({"type": "Feature", "properties": props, "geometry": geom})
    doc = {"type": "FeatureCollection", "features": features}
    compiled = run(fences_from_geojson(doc, "f"), fixes)
    assert len(compiled) > 50
    assert plain.run(plain.fences_from_geojson(doc, "f"), fixes) == compiled
