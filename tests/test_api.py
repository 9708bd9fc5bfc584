"""The control tower's HTTP API against a real in-process collector (a real SQLite store, and a real
PostgreSQL server in a schema of its own; the real ingest path, uvicorn on a loopback port),
checked against the records we sent. Every test runs on both stores."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.collector import Collector, open_store
from cloud.ingest import Ingest
from cloud.tokens import Tokens
from protocols import convert, wire
from protocols.records import Alert, BlobChunk, Delivery, Eta, Fix, Record, Signal, StopUpdate, iso_time
from tests.conftest import free_port
from tests.postgres import Postgres, run_postgres

T0 = 1_410_325_200.0  # 2014-09-10T05:00:00Z
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"


class Tower:
    def __init__(self, tmp: Path, db: str | Path) -> None:
        self.db = db
        store = open_store(db)
        (tmp / "manifests").mkdir()
        manifest = {
            "manifest_id": "m1",
            "vehicle": "van-1",
            "depot": {"id": "depot-north", "lat": 48.1, "lon": 11.4, "radius_m": 100},
            "stops": [
                {
                    "id": s,
                    "lat": 48.15,
                    "lon": 11.5,
                    "radius_m": 40,
                    "service_s": 60,
                    "parcels": [],
                    "window": ["2014-09-10T05:00:00Z", "2014-09-10T05:30:00Z"],
                }
                for s in ("S1", "S2", "S3", "S4", "S5")
            ],
        }
        (tmp / "manifests" / "m1.json").write_text(json.dumps(manifest))
        self.collector = Collector(
            self.db, ingest=Ingest(store), http_addr="127.0.0.1:0", manifests=tmp / "manifests"
        )
        self.collector.start()
        self.base = f"http://127.0.0.1:{self.collector.http.bound_port}"
        tokens = Tokens(self.db)
        self.read, self.admin = tokens.create("read"), tokens.create("admin")
        self.seq: dict[str, int] = {}
        self.batches = 0

    def send(self, vehicle: str, *records: Record) -> None:
        bodies = []
        for r in records:
            self.seq[vehicle] = self.seq.get(vehicle, 0) + 1
            bodies.append(convert.encode(self.seq[vehicle], r))
        self.batches += 1
        ack = self.collector.ingest.handle(wire.encode_batch(vehicle, self.batches, bodies), vehicle)
        assert not ack.rejected and not ack.quarantined, ack

    def get(self, path: str, token: str | None = "read", raw: bool = False) -> Any:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {getattr(self, token, token)}"
        with urllib.request.urlopen(
            urllib.request.Request(self.base + path, headers=headers), timeout=10
        ) as r:
            body = r.read()
            return body if raw else json.loads(body)

    def post(self, path: str, body: dict[str, Any], token: str = "admin") -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {getattr(self, token, token)}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """The collector's ``--db``: a SQLite file, or a PostgreSQL URL with an empty schema."""
    if request.param == "sqlite":
        return tmp_path / "collector.db"
    server: Postgres = request.getfixturevalue("postgres")
    return server.new_store_url("api")


@pytest.fixture
def tower(tmp_path: Path, store_db: str | Path) -> Iterator[Tower]:
    t = Tower(tmp_path, store_db)
    try:
        yield t
    finally:
        t.collector.stop()


def status(call: Any) -> int:
    try:
        call()
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_tokens_are_required_and_roles_enforced(tower: Tower) -> None:
    assert status(lambda: tower.get("/api/v1/vehicles", token=None)) == 401
    assert status(lambda: tower.get("/api/v1/vehicles", token="not-a-token")) == 401
    assert status(lambda: tower.get("/api/v1/vehicles", token="Bearer")) == 401
    assert status(lambda: tower.get("/api/v1/events", token=None)) == 401
    assert tower.get("/api/v1/vehicles") == []
    assert (
        status(lambda: tower.post("/api/v1/shares", {"stop": "S1", "vehicle": "van-1"}, token="read")) == 403
    )
    # only the hash is stored: the token itself appears nowhere in the database
    if isinstance(tower.db, Path):
        assert tower.read.encode() not in tower.db.read_bytes()
    else:
        with psycopg.connect(tower.db) as db:
            rows = db.execute("SELECT hash, role FROM api_tokens").fetchall()
        assert sorted(rows) == sorted(
            [
                (hashlib.sha256(t.encode()).hexdigest(), r)
                for t, r in ((tower.read, "read"), (tower.admin, "admin"))
            ]
        )


def test_vehicles_track_and_exceptions_follow_the_records(tower: Tower) -> None:
    fixes = [Fix(T0 + i, 3, 48.1 + i * 1e-4, 11.5 + i * 2e-4, speed=float(i)) for i in range(10)]
    tower.send("van-1", *fixes[:5])
    tower.send("van-1", Signal(T0 + 3, SOC, 81.5), Signal(T0 + 4, "Vehicle.Speed", 12.0))
    tower.send("van-1", *reversed(fixes[5:]))  # newest first: the latest is still the last in time
    tower.send(
        "van-1",
        Eta(T0 + 9, "m1", ("S2", "S3"), (T0 + 600, T0 + 900)),
        Alert(T0 + 5, "restricted_zone", "warning", "in zone", {"fence": "z1"}),
        Alert(T0 + 6, "restricted_zone", "warning", "in zone", {"fence": "z2"}),
        Alert(T0 + 7, "restricted_zone_cleared", "info", "left", {"fence": "z1", "left": "x"}),
        Alert(T0 + 8, "document_received", "info", "not an exception"),
    )
    tower.send("van-2", Fix(T0, 2, -33.9, 151.2))
    [one, two] = tower.get("/api/v1/vehicles")
    assert one["vehicle"] == "van-1" and two["vehicle"] == "van-2"
    assert (one["time"], one["lat"], one["lon"]) == (iso_time(T0 + 9), 48.1009, 11.5018)
    assert one["speed"] == 9.0 and one["soc"] == 81.5
    assert one["next_stop"] == "S2" and one["eta"] == iso_time(T0 + 600)
    assert [(e["code"], e["time"]) for e in one["open_exceptions"]] == [("restricted_zone", iso_time(T0 + 6))]
    assert "soc" not in two and two["open_exceptions"] == []

    track = tower.get(f"/api/v1/vehicles/van-1/track?from={iso_time(T0 + 2)}&to={iso_time(T0 + 4)}")
    assert track == [
        {"time": iso_time(f.time), "lat": round(f.lat, 7), "lon": round(f.lon, 7)} for f in fixes[2:5]
    ]
    assert len(tower.get("/api/v1/vehicles/van-1/track")) == 10
    assert status(lambda: tower.get("/api/v1/vehicles/van-1/track?from=yesterday")) == 400

    excs = tower.get("/api/v1/exceptions")
    assert [(e["attrs"]["fence"], e["open"]) for e in excs] == [("z1", False), ("z2", True)]
    assert excs[0]["cleared"] == iso_time(T0 + 7)
    assert [e["attrs"]["fence"] for e in tower.get("/api/v1/exceptions?open=true")] == ["z2"]


def test_stops_deliveries_and_photos(tower: Tower) -> None:
    photo = Path(__file__).read_bytes()[:3000]  # any bytes: what matters is they come back whole
    digest = hashlib.sha256(photo).hexdigest()
    chunks = [
        BlobChunk(T0 + 61, "p1", i, 2, digest, "image/jpeg", "S1/P-1", photo[i * 1500 : (i + 1) * 1500])
        for i in range(2)
    ]
    tower.send(
        "van-1",
        StopUpdate(T0 + 30, "m1", "S1", "arrived"),
        Delivery(T0 + 60, "m1", "S1", "P-1", "raw", 48.15, 11.5, 3),
        StopUpdate(T0 + 60, "m1", "S1", "completed"),
        chunks[1],
    )
    [d] = tower.get("/api/v1/vehicles/van-1/deliveries")
    assert d["parcel"] == "P-1" and d["photos"] == []  # half a photo is not shown
    tower.send("van-1", chunks[0], BlobChunk(T0 + 62, "p2", 0, 1, "0" * 64, "image/jpeg", "S1/P-1", b"bad"))
    [d] = tower.get("/api/v1/vehicles/van-1/deliveries")
    assert d["photos"] == [{"blob": "p1", "media_type": "image/jpeg", "bytes": len(photo)}]  # p2: bad hash
    assert tower.get("/api/v1/vehicles/van-1/blobs/p1", raw=True) == photo
    assert status(lambda: tower.get("/api/v1/vehicles/van-1/blobs/p2", raw=True)) == 404
    [s1] = tower.get("/api/v1/vehicles/van-1/stops")
    assert s1["status"] == "completed" and s1["times"]["arrived"] == iso_time(T0 + 30)


def test_events_stream_records_as_they_are_stored(tower: Tower) -> None:
    url = f"{tower.base}/api/v1/events?vehicle=van-1&access_token={tower.read}"
    got: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with urllib.request.urlopen(url, timeout=20) as r:
            event = None
            for line in r:
                text = line.decode().rstrip("\n")
                if text == ": connected":
                    connected.set()
                elif text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: ") and event == "record":
                    got.append(json.loads(text[6:]))
                    if len(got) == 2:
                        return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert connected.wait(10)
    tower.send("van-2", Fix(T0, 2, 1.0, 2.0))  # another van: filtered out
    tower.send("van-1", Fix(T0, 2, 48.1, 11.5), Alert(T0 + 1, "gps_lost"))
    reader.join(20)
    assert [(e["vehicle"], e["seq"], e["kind"]) for e in got] == [("van-1", 1, "fix"), ("van-1", 2, "alert")]
    assert got[0]["lat"] == 48.1


def test_openapi_describes_every_route(tower: Tower) -> None:
    from cloud.api.app import API_ROUTES

    doc = tower.get("/api/v1/openapi.json", token=None)  # public
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    routed = {(m.lower(), r.path) for r in API_ROUTES for m in (r.methods or ()) if m != "HEAD"}
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routed == described
    for path, ops in doc["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for op in ops.values():
            assert op["summary"] and op["responses"]
            assert all(code.isdigit() and "description" in r for code, r in op["responses"].items())
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert in_path == names, path
            if op.get("security") != []:
                assert "401" in op["responses"], path


def test_tracking_link_shows_one_stop_and_nothing_when_wrong_or_expired(tower: Tower) -> None:
    tower.send("van-1", Fix(T0, 3, 48.2, 11.6))
    tower.send(
        "van-1", Eta(T0 + 1, "m1", ("S1", "S2", "S3", "S4", "S5"), tuple(T0 + 60 * i for i in range(1, 6)))
    )
    near = tower.post("/api/v1/shares", {"stop": "S3"})  # vehicle found from the manifest
    far = tower.post("/api/v1/shares", {"stop": "S5", "vehicle": "van-1"})
    assert near["vehicle"] == "van-1" and len(near["token"]) >= 32
    state = tower.get(f"/t/{near['token']}/state", token=None)
    assert state["stop"] == "S3" and state["eta"] == iso_time(T0 + 180)
    assert state["window"] == ["2014-09-10T05:00:00.000Z", "2014-09-10T05:30:00.000Z"]
    assert state["van"] == {"time": iso_time(T0), "lat": 48.2, "lon": 11.6}
    far_state = tower.get(f"/t/{far['token']}/state", token=None)
    assert "van" not in far_state and far_state["stop"] == "S5"  # not among the next three
    assert "S1" not in json.dumps(state) and "S4" not in json.dumps(state)

    expired, _ = Tokens(tower.db, clock=lambda: T0).share("van-1", "S3", 60)  # expired in 2014
    for token in (expired, near["token"][:-1] + "x", "nonsense"):
        assert status(lambda t=token: tower.get(f"/t/{t}", token=None, raw=True)) == 404
        assert status(lambda t=token: tower.get(f"/t/{t}/state", token=None)) == 404
    page = tower.get(f"/t/{near['token']}", token=None, raw=True).decode()
    assert "<html" in page.lower()


def test_plan_gives_the_manifests_stops_and_fences_for_the_map(tower: Tower) -> None:
    square = [[[11.50, 48.10], [11.51, 48.10], [11.51, 48.11], [11.50, 48.11], [11.50, 48.10]]]
    hole = [[11.502, 48.102], [11.504, 48.102], [11.504, 48.104], [11.502, 48.102]]
    fences = [
        {
            "type": "Feature",
            "properties": {"id": "zone", "kind": "zone"},
            "geometry": {"type": "Polygon", "coordinates": [*square, hole]},
        },
        {
            "type": "Feature",
            "properties": {"id": "charger", "kind": "charger", "radius_m": 25},
            "geometry": {"type": "Point", "coordinates": [11.52, 48.12]},
        },
        {
            "type": "Feature",
            "properties": {"id": "two", "kind": "restricted"},
            "geometry": {"type": "MultiPolygon", "coordinates": [square, square]},
        },
        # unusable, each skipped alone: an open ring, a latitude out of range, a circle without radius
        {
            "type": "Feature",
            "properties": {"id": "open", "kind": "zone"},
            "geometry": {"type": "Polygon", "coordinates": [square[0][:-1]]},
        },
        {
            "type": "Feature",
            "properties": {"id": "far", "kind": "zone"},
            "geometry": {"type": "Polygon", "coordinates": [[[0, 91], [1, 91], [1, 92], [0, 91]]]},
        },
        {
            "type": "Feature",
            "properties": {"id": "dot", "kind": "zone"},
            "geometry": {"type": "Point", "coordinates": [11.5, 48.1]},
        },
    ]
    manifest = {
        "manifest_id": "m2",
        "vehicle": "van-2",
        "depot": {"id": "depot-south", "lat": 48.0, "lon": 11.3, "radius_m": 150},
        "stops": [
            {
                "id": "T1",
                "lat": 48.105,
                "lon": 11.505,
                "radius_m": 30,
                "service_s": 60,
                "parcels": [],
                "window": ["2014-09-10T06:00:00Z", "2014-09-10T07:00:00Z"],
            },
        ],
        "fences": {"type": "FeatureCollection", "features": fences},
    }
    manifests = tower.collector.manifests
    assert manifests is not None
    (manifests / "m2.json").write_text(json.dumps(manifest))
    plan = tower.get("/api/v1/plan?vehicle=van-2")
    assert plan["stops"] == [
        {
            "manifest": "m2",
            "vehicle": "van-2",
            "stop": "T1",
            "lat": 48.105,
            "lon": 11.505,
            "radius_m": 30,
            "window": ["2014-09-10T06:00:00.000Z", "2014-09-10T07:00:00.000Z"],
        }
    ]
    features = plan["fences"]["features"]
    assert [f["properties"]["id"] for f in features] == ["depot-south", "zone", "charger", "two"]
    assert features[0]["geometry"] == {"type": "Point", "coordinates": [11.3, 48.0]}
    assert features[0]["properties"] == {
        "id": "depot-south",
        "kind": "depot",
        "radius_m": 150,
        "manifest": "m2",
        "vehicle": "van-2",
    }
    assert features[1]["geometry"] == fences[0]["geometry"]
    assert features[2]["properties"]["radius_m"] == 25 and features[3]["geometry"] == fences[2]["geometry"]
    everyone = tower.get("/api/v1/plan")
    assert {s["stop"] for s in everyone["stops"]} == {"S1", "S2", "S3", "S4", "S5", "T1"}
    assert status(lambda: tower.get("/api/v1/plan", token=None)) == 401


def test_dropline_collector_serves_the_tower_from_postgres(postgres: Postgres, tmp_path: Path) -> None:
    """The commands as an operator runs them: ``dropline collector --db postgresql://... --http``,
    ``dropline token create`` and ``dropline share`` on the same URL; a van's batch over gRPC
    shows in the API with the token, and the tracking link opens its stop."""
    from tests.pipeline_fixtures import Proc, wait_port

    url = postgres.new_store_url("cli")
    http, grpc = free_port(), free_port()
    args = [
        "collector",
        "--insecure",
        "--db",
        url,
        "--http",
        f"127.0.0.1:{http}",
        "--grpc",
        f"127.0.0.1:{grpc}",
    ]
    collector = Proc(args, tmp_path / "collector.log").start()
    try:
        wait_port(http, 30)

        def dropline(*argv: str) -> Any:
            done = subprocess.run(
                [sys.executable, "-m", "dropline_cli", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return json.loads(done.stdout)

        token = dropline("token", "create", "--db", url, "--role", "read")["token"]
        share = dropline(
            "share", "S9", "--db", url, "--vehicle", "van-9", "--base", f"http://127.0.0.1:{http}"
        )
        store = open_store(url)  # the van's batch, written as the ingest writes it
        try:
            Ingest(store).handle(
                wire.encode_batch("van-9", 1, [convert.encode(1, Fix(T0, 3, 48.2, 11.6))]), "van-9"
            )
        finally:
            store.close()
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/api/v1/vehicles", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            [van] = json.loads(r.read())
        assert (van["vehicle"], van["lat"], van["lon"]) == ("van-9", 48.2, 11.6)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}{share['path']}/state", timeout=10) as r:
            assert json.loads(r.read())["stop"] == "S9"
    except BaseException:
        print(collector.tail())
        raise
    finally:
        collector.stop()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-200, 200) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
_lonlat = st.tuples(  # mostly in range, often not
    st.floats(-200, 200) | st.integers(-200, 200) | st.just(math.nan),
    st.floats(-100, 100) | st.integers(-100, 100),
).map(list)
_ring = st.lists(_lonlat, min_size=3, max_size=8).map(lambda ps: [*ps, ps[0]])
_geometry = st.one_of(
    _json,
    st.builds(
        lambda rings: {"type": "Polygon", "coordinates": rings},
        st.lists(_ring | _json, min_size=1, max_size=3),
    ),
    st.builds(lambda p: {"type": "Point", "coordinates": p}, _lonlat | _json),
)


def _valid_position(p: Any) -> bool:
    return (
        isinstance(p, list)
        and len(p) == 2
        and all(type(v) in (int, float) and math.isfinite(v) for v in p)
        and -180 <= p[0] <= 180
        and -90 <= p[1] <= 90
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry=_geometry, radius=_json | st.floats(0.1, 1e4), kind=st.sampled_from(["zone", "restricted"]))
def test_fence_parser_keeps_only_usable_geometry(
    tmp_path: Path, geometry: Any, radius: Any, kind: str
) -> None:
    """Any JSON as a fence: loading never raises, the manifest's stops still count, and a fence
    that is kept is a closed polygon or a circle of positive radius, positions in range."""
    from cloud.api import manifests

    feature = {
        "type": "Feature",
        "properties": {"id": "f", "kind": kind, "radius_m": radius},
        "geometry": geometry,
    }
    doc = {
        "manifest_id": "m",
        "vehicle": "v",
        "depot": {"id": "d", "lat": 48.0, "lon": 11.0, "radius_m": 10},
        "stops": [
            {"id": "S", "lat": 48.1, "lon": 11.1, "window": ["2014-09-10T06:00:00Z", "2014-09-10T07:00:00Z"]}
        ],
        "fences": {"type": "FeatureCollection", "features": [feature]},
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    plans = manifests.load(tmp_path)
    assert list(plans.stops) == [("m", "S")]
    kept = [f for f in plans.fences if f["properties"]["id"] == "f"]
    for f in kept:
        g = f["geometry"]
        if g["type"] == "Point":
            assert _valid_position(g["coordinates"]) and f["properties"]["radius_m"] > 0
        else:
            assert g["type"] == "Polygon"
            for ring in g["coordinates"]:
                assert len(ring) >= 4 and ring[0] == ring[-1] and all(_valid_position(p) for p in ring)
    rings = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if (
        isinstance(geometry, dict)
        and geometry.get("type") == "Polygon"
        and all(
            isinstance(r, list) and len(r) >= 4 and r[0] == r[-1] and all(_valid_position(p) for p in r)
            for r in rings
        )
    ):
        assert kept and kept[0]["geometry"]["coordinates"] == rings  # a valid polygon is never dropped
