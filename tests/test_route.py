"""The route stage: a real day replayed with a manifest (deliveries at the right stops, each
exception raised when its scenario is in the input and never when not), idling from CAN signals,
a refused manifest."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from agent.config import RouteConfig
from agent.core import Core, default_stages
from agent.events import Document
from agent.replay import Replay, export_rows, load_config
from agent.stages.geofence import GeofenceStage
from agent.stages.vehicle import IGNITION, SPEED
from protocols.records import Alert, DocumentStatus, Signal, Tick

CASE = Path(__file__).parent / "cases" / "route-day"


def replay(folder: Path) -> list[dict[str, Any]]:
    return list(export_rows(Replay(load_config(folder / "agent.toml")).records()))


def test_a_day_with_a_manifest_delivers_at_the_right_stops_and_raises_each_exception_once() -> None:
    rows = replay(CASE)
    deliveries = {(r["stop"], r["parcel"]) for r in rows if r["kind"] == "delivery"}
    # by hand, from scans-timed.txt and the manifest: two parcels each at S1 and S2, each once
    assert deliveries == {
        ("S1", "106141412345678908"),
        ("S1", "43240701029999"),
        ("S2", "43250701029999"),
        ("S2", "373400306809981733"),
    }
    assert sum(r["kind"] == "delivery" for r in rows) == 4  # the repeated scan is no second one
    codes = Counter(r["code"] for r in rows if r["kind"] == "alert")
    for code in ("parcel_wrong_stop", "scan_outside_fence", "extended_dwell", "restricted_zone"):
        assert codes[code] == 1 and codes[f"{code}_cleared"] == 1, code
    assert codes["parcel_not_in_manifest"] == 1
    assert not {"idling", "gps_lost"} & set(codes)  # not in this input
    dwell = next(r for r in rows if r.get("code") == "extended_dwell")
    assert dwell["attrs"]["stop"] == "S1"  # S1: 20 s service x 2 exceeded; S2: 120 s x 2 not
    status = [(r["stop"], r["status"]) for r in rows if r["kind"] == "stop_update"]
    assert status == [
        ("S1", "arrived"),
        ("S1", "serving"),
        ("S1", "completed"),
        ("S1", "departed"),
        ("S2", "arrived"),
        ("S2", "serving"),
        ("S2", "completed"),
        ("S2", "departed"),
        ("S3", "skipped"),  # driven past, never stopped at; the van then reached the depot
    ]


def test_the_same_day_without_scans_or_zones_raises_none_of_their_exceptions(tmp_path: Path) -> None:
    for name in ("agent.toml", "manifest.json"):
        shutil.copy(CASE / name, tmp_path / name)
    toml = (
        (tmp_path / "agent.toml")
        .read_text()
        .replace("../../../examples", str(CASE.parent.parent.parent / "examples"))
    )
    toml = toml.replace('[scanner]\ndriver = "scan-file"\npath = "scans-timed.txt"\n', "")
    (tmp_path / "agent.toml").write_text(toml)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["fences"]["features"] = [
        f for f in manifest["fences"]["features"] if f["properties"]["kind"] != "restricted"
    ]
    manifest["stops"][0]["service_s"] = 120
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    rows = replay(tmp_path)
    # ETA erosion is the ETA stage's own rule (tests/test_eta_stage.py): stops nobody serves run late
    codes = {r["code"] for r in rows if r["kind"] == "alert"} - {"eta_erosion", "eta_erosion_cleared"}
    assert codes == {"document_received"}
    assert not [r for r in rows if r["kind"] == "delivery"]


def signal(t: float, name: str, value: float) -> Signal:
    return Signal(t, name, value)


def idling_codes(ignition: float, speeds: list[tuple[float, float]]) -> list[tuple[float, str]]:
    core = Core(default_stages(route=RouteConfig(idle_s=300.0)))
    events: list[Any] = [signal(0.0, IGNITION, ignition)] + [signal(t, SPEED, v) for t, v in speeds]
    events += [Tick(float(t)) for t in range(1, 1000)]
    events.sort(key=lambda e: e.time)
    out: list[tuple[float, str]] = []
    for e in events:
        out += [
            (r.time, r.code)
            for r in core.handle(e).records
            if isinstance(r, Alert) and r.code.startswith("idling")
        ]
    return out


def test_idling_is_ignition_on_and_stationary_longer_than_idle_s_then_cleared() -> None:
    assert idling_codes(4.0, [(0.5, 0.0), (600.5, 30.0)]) == [(300.5, "idling"), (600.5, "idling_cleared")]
    assert idling_codes(2.0, [(0.5, 0.0)]) == []  # ignition OFF: parked, not idling
    assert idling_codes(4.0, [(0.5, 0.0), (200.5, 40.0), (250.5, 0.0)]) == [
        (550.5, "idling")
    ]  # moved between


def test_a_bad_manifest_is_refused_and_the_old_one_kept() -> None:
    core = Core()
    good = (CASE / "manifest.json").read_bytes()
    first = core.handle(Document(1.0, "manifest", good)).records
    assert [r.applied for r in first if isinstance(r, DocumentStatus)] == [True]
    bad = core.handle(Document(2.0, "manifest", b'{"manifest_id": "x"}')).records
    refused = [r for r in bad if isinstance(r, DocumentStatus)]
    assert [r.applied for r in refused] == [False] and "vehicle: required" in refused[0].reason
    geofence = core.stages[1]
    assert isinstance(geofence, GeofenceStage) and geofence.manifest is not None
    assert geofence.manifest.manifest_id == "munich-2014-09-10"
