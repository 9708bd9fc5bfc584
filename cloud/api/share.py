"""Customer tracking links: ``POST /api/v1/shares`` (admin) creates one for a stop; ``/t/{token}``
is the customer's page, ``/t/{token}/state`` what it shows, ``/t/{token}/events`` a contentless
"something changed" stream. The link is the only credential and shows one stop: its window, its
ETA, its proof of delivery, and the van's position only while this stop is among the next
``NEXT_STOPS`` of the van's latest ETA and not yet done. An unknown or expired link gets the same
404 page as a wrong one: nothing about any stop."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from cloud.api import manifests, reads
from cloud.api.auth import require
from cloud.api.live import SSE_HEADERS
from cloud.api.stream import Hub
from cloud.sqldb import SqlDb
from cloud.store import Store
from cloud.tokens import ShareLink, Tokens
from protocols.records import iso_time
from protocols.topics import valid_vehicle

NEXT_STOPS = 3
"""The van is shown while the customer's stop is among this many next stops."""

DEFAULT_TTL_S = 24 * 3600.0
MAX_TTL_S = 14 * 24 * 3600.0

NOT_VALID = "<!doctype html><title>Dropline</title><p>This link is not valid.</p>"
DONE = ("completed", "skipped")


def resolve_vehicle(db: SqlDb, store: Store, plans: manifests.Plans, stop: str) -> str:
    """The one van whose manifest or records name ``stop``; ValueError if none or several."""
    found = {p.vehicle for p in plans.stops.values() if p.stop == stop}
    if not found:
        for v in store.vehicles():
            if any(s["stop"] == stop for s in reads.stops(db, v.vehicle)):
                found.add(v.vehicle)
    if len(found) != 1:
        which = "no van" if not found else f"vans {', '.join(sorted(found))}"
        raise ValueError(f"stop {stop!r} belongs to {which}: name the vehicle")
    return found.pop()


def create(
    request_body: dict[str, Any], db: SqlDb, store: Store, tokens: Tokens, plans: manifests.Plans
) -> dict[str, Any]:
    """Make a link from ``{stop, vehicle?, ttl_s?}``: ``{token, path, stop, vehicle, expires}``."""
    stop = request_body.get("stop")
    if not isinstance(stop, str) or not stop:
        raise ValueError("stop: a stop id is required")
    vehicle = request_body.get("vehicle") or resolve_vehicle(db, store, plans, stop)
    if not isinstance(vehicle, str) or not valid_vehicle(vehicle):
        raise ValueError(f"vehicle: not a vehicle id: {vehicle!r}")
    ttl = request_body.get("ttl_s", DEFAULT_TTL_S)
    if not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_S:
        raise ValueError(f"ttl_s: 1 .. {MAX_TTL_S:g} seconds")
    token, link = tokens.share(vehicle, stop, float(ttl))
    return {
        "token": token,
        "path": f"/t/{token}",
        "stop": stop,
        "vehicle": vehicle,
        "expires": iso_time(link.expires),
    }


async def create_share(request: Request) -> JSONResponse:
    require(request, "admin")
    try:
        body = json.loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        state = request.app.state
        out = create(body, state.db, state.store, state.tokens, manifests.load(state.manifests))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return JSONResponse(out, status_code=201)


def _link(request: Request) -> ShareLink:
    tokens: Tokens = request.app.state.tokens
    link = tokens.shared(str(request.path_params["token"]))
    if link is None:
        raise HTTPException(404, "not valid")
    return link


def page(request: Request) -> Response:
    tokens: Tokens = request.app.state.tokens
    if tokens.shared(str(request.path_params["token"])) is None:
        return HTMLResponse(NOT_VALID, status_code=404, headers={"Cache-Control": "no-store"})
    html = resources.files("cloud").joinpath("pages/track.html").read_text()
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def state(request: Request) -> JSONResponse:
    """What the customer may see of their stop, nothing of any other."""
    link = _link(request)
    db: SqlDb = request.app.state.db
    plan = manifests.load(request.app.state.manifests).find(link.vehicle, link.stop)
    out: dict[str, Any] = {"stop": link.stop, "expires": iso_time(link.expires), "status": None, "eta": None}
    if plan is not None:
        out["window"] = [iso_time(plan.window[0]), iso_time(plan.window[1])]
        out["place"] = {"lat": plan.lat, "lon": plan.lon}
    mine = [s for s in reads.stops(db, link.vehicle) if s["stop"] == link.stop]
    ahead = False
    if mine:
        out["status"], out["eta"] = mine[-1]["status"], mine[-1]["eta"]
        out["times"] = mine[-1]["times"]
        eta = reads.latest_eta(db, link.vehicle)
        ahead = eta is not None and link.stop in eta["stops"][:NEXT_STOPS] and out["status"] not in DONE
    if ahead:
        store: Store = request.app.state.store
        pos = next((v.position for v in store.vehicles() if v.vehicle == link.vehicle), None)
        if pos is not None:
            out["van"] = {"time": pos["time"], "lat": pos["lat"], "lon": pos["lon"]}
    proofs = [d for d in reads.deliveries(db, link.vehicle) if d["stop"] == link.stop]
    if proofs:
        out["delivered"] = [
            {"time": d["time"], "parcel": d["parcel"], "photos": [p["blob"] for p in d["photos"]]}
            for d in proofs
        ]
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


def photo(request: Request) -> Response:
    link = _link(request)
    found = reads.photo(request.app.state.db, link.vehicle, str(request.path_params["blob"]))
    if found is None or not found.delivery.startswith(f"{link.stop}/"):
        raise HTTPException(404, "not valid")
    return Response(found.data, media_type=found.media_type, headers={"Cache-Control": "no-store"})


async def events(request: Request) -> StreamingResponse:
    link = _link(request)
    hub: Hub = request.app.state.hub
    stream = hub.stream(lambda e: e["vehicle"] == link.vehicle, redact=True)
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)
