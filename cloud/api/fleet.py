"""Read views of the fleet: latest state per van, a van's track, stops, exceptions, proofs of
delivery with their photos, and the day's KPIs. Sync endpoints: Starlette runs them in its thread
pool, so their SQLite reads never block the event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloud import kpi
from cloud.api import manifests, reads
from cloud.api.auth import require
from cloud.sqldb import SqlDb
from cloud.store import Store
from protocols.records import iso_time, parse_iso_time
from protocols.topics import valid_vehicle


def _db(request: Request) -> SqlDb:
    db: SqlDb = request.app.state.db
    return db


def _vehicle(request: Request) -> str:
    vehicle = str(request.path_params["vehicle"])
    if not valid_vehicle(vehicle):
        raise HTTPException(404, "no such vehicle")
    return vehicle


def _time_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return round(parse_iso_time(text) * 1000)
    except ValueError:
        raise HTTPException(400, f"{name}: not an ISO 8601 time: {text!r}") from None


def vehicles(request: Request) -> JSONResponse:
    require(request)
    store: Store = request.app.state.store
    rows = [reads.vehicle_state(_db(request), v.vehicle, v.position) for v in store.vehicles()]
    return JSONResponse(rows)


def track(request: Request) -> JSONResponse:
    require(request)
    vehicle = _vehicle(request)
    rows = reads.records(
        _db(request), vehicle, ("fix",), _time_param(request, "from"), _time_param(request, "to")
    )
    return JSONResponse([{"time": r["time"], "lat": r["lat"], "lon": r["lon"]} for r in rows])


def stops(request: Request) -> JSONResponse:
    require(request)
    return JSONResponse(reads.stops(_db(request), _vehicle(request)))


def exceptions(request: Request) -> JSONResponse:
    """Exceptions of one van (``/vehicles/{vehicle}/exceptions``) or of the fleet; ``?open=true``
    for those not cleared yet."""
    require(request)
    vehicle = _vehicle(request) if "vehicle" in request.path_params else None
    alerts = reads.records(
        _db(request), vehicle, ("alert",), _time_param(request, "from"), _time_param(request, "to")
    )
    out = reads.exceptions(alerts)
    if request.query_params.get("open") in ("1", "true"):
        out = [e for e in out if e["open"]]
    return JSONResponse(out)


def deliveries(request: Request) -> JSONResponse:
    require(request)
    return JSONResponse(reads.deliveries(_db(request), _vehicle(request)))


def blob(request: Request) -> Response:
    require(request)
    found = reads.photo(_db(request), _vehicle(request), str(request.path_params["blob"]))
    if found is None:
        raise HTTPException(404, "no such complete photo")
    return Response(
        found.data, media_type=found.media_type, headers={"Cache-Control": "private, max-age=3600"}
    )


def plan(request: Request) -> JSONResponse:
    """What the manifests plan (``?vehicle=V``: one van's): stops with their place, arrival circle
    and window, and fences (depots included) as a GeoJSON FeatureCollection, for the map."""
    require(request)
    vehicle = request.query_params.get("vehicle")
    plans = manifests.load(request.app.state.manifests)
    stops = [
        {
            "manifest": p.manifest,
            "vehicle": p.vehicle,
            "stop": p.stop,
            "lat": p.lat,
            "lon": p.lon,
            "radius_m": p.radius_m,
            "window": [iso_time(p.window[0]), iso_time(p.window[1])],
        }
        for p in plans.stops.values()
        if vehicle is None or p.vehicle == vehicle
    ]
    fences = [f for f in plans.fences if vehicle is None or f["properties"]["vehicle"] == vehicle]
    return JSONResponse({"stops": stops, "fences": {"type": "FeatureCollection", "features": fences}})


def kpis(request: Request) -> JSONResponse:
    """``?day=YYYY-MM-DD`` (UTC; default today): per van and per depot."""
    require(request)
    text = request.query_params.get("day") or datetime.now(UTC).strftime("%Y-%m-%d")
    try:
        start = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise HTTPException(400, f"day: not YYYY-MM-DD: {text!r}") from None
    start_ms = round(start * 1000)
    rows = reads.records(
        _db(request),
        None,
        ("fix", "signal", "stop_update", "delivery", "eta"),
        start_ms,
        start_ms + 86_400_000 - 1,
    )
    plans = manifests.load(request.app.state.manifests)
    out: dict[str, Any] = {"day": text, **kpi.day_kpis(rows, plans.windows(), plans.depots)}
    return JSONResponse(out)
