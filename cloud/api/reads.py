"""What the control tower reads: stored records of one vehicle, decoded, and what they add up to.

Every function opens its own connection to the store's database (``cloud.sqldb``: the SQLite
file read-only, so a request never waits for the ingest's writer (WAL); or the PostgreSQL
database, which every collector sharing it writes), and sees what is committed. Records come back in the
export JSON form (``protocols.convert.to_json``) with ``vehicle``; views fill in as record kinds
appear: a van without a manifest simply has no stops, ETAs or proofs of delivery.

Photos come from the collector's reassembly (``cloud.blobs``, ``<db>.blobs`` or PostgreSQL): each verified
once when its last chunk arrived, never rebuilt from the chunk records per request.

Exceptions are alerts of severity ``warning`` or worse; one is cleared by a later ``<code>_cleared``
alert carrying the same ``attrs`` (the route stage copies them), and ``gps_lost`` by
``gps_restored``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cloud.blobs import Blobs
from cloud.sqldb import Conn, SqlDb
from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb

SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
ENERGY = "Vehicle.Powertrain.TractionBattery.StateOfCharge.CurrentEnergy"
CLEARED_BY = {"gps_restored": "gps_lost"}
"""Clearing alert codes that do not follow the ``<code>_cleared`` convention."""
EXCEPTION_SEVERITIES = frozenset({"warning", "error", "critical"})


def decode(vehicle: str, body: bytes) -> dict[str, Any]:
    return {"vehicle": vehicle, **convert.to_json(pb.Record.FromString(body))}


def records(
    db: SqlDb,
    vehicle: str | None,
    kinds: Sequence[str],
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Records of ``kinds`` (one vehicle, or all), in time order then seq, with time in
    [from_ms, to_ms] where given."""
    where = [f"kind IN ({','.join('?' * len(kinds))})"]
    params: list[Any] = list(kinds)
    if vehicle is not None:
        where.append("vehicle = ?")
        params.append(vehicle)
    if from_ms is not None:
        where.append("time_ms >= ?")
        params.append(from_ms)
    if to_ms is not None:
        where.append("time_ms <= ?")
        params.append(to_ms)
    sql = f"SELECT vehicle, body FROM records WHERE {' AND '.join(where)} ORDER BY time_ms, vehicle, seq"
    with db.connect() as conn:
        return [decode(v, bytes(body)) for v, body in conn.execute(sql, params)]


def _latest(db: Conn, vehicle: str, kind: str) -> Iterator[pb.Record]:
    query = "SELECT body FROM records WHERE vehicle = ? AND kind = ? ORDER BY time_ms DESC, seq DESC"
    for (body,) in db.execute(query, (vehicle, kind)):
        yield pb.Record.FromString(bytes(body))


def exceptions(alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raised exceptions in time order, each with ``open`` and, once cleared, ``cleared`` (the
    clearing alert's time)."""
    out: list[dict[str, Any]] = []
    for alert in alerts:
        code = alert["code"]
        raised = CLEARED_BY.get(code) or (
            code.removesuffix("_cleared") if code.endswith("_cleared") else None
        )
        if raised is not None:
            for exc in out:
                if exc["open"] and exc["vehicle"] == alert["vehicle"] and exc["code"] == raised:
                    attrs = alert.get("attrs", {})
                    if code in CLEARED_BY or all(attrs.get(k) == v for k, v in exc["attrs"].items()):
                        exc["open"], exc["cleared"] = False, alert["time"]
            continue
        if alert.get("severity") in EXCEPTION_SEVERITIES:
            out.append({**alert, "open": True})
    return out


def stops(db: SqlDb, vehicle: str) -> list[dict[str, Any]]:
    """Each stop the van reported on or has an ETA for: ``{manifest, stop, status, times:
    {status: time}, eta}`` in the order of its latest ETA (then first report)."""
    rows = records(db, vehicle, ("stop_update", "eta"))
    by_stop: dict[tuple[str, str], dict[str, Any]] = {}
    latest_eta: dict[str, Any] | None = None
    for r in rows:
        if r["kind"] == "eta":
            latest_eta = r
            continue
        entry = by_stop.setdefault(
            (r["manifest"], r["stop"]),
            {"manifest": r["manifest"], "stop": r["stop"], "status": None, "times": {}, "eta": None},
        )
        entry["status"] = r["status"]
        entry["times"].setdefault(r["status"], r["time"])
    order: list[tuple[str, str]] = []
    if latest_eta is not None:
        for stop, eta in zip(latest_eta["stops"], latest_eta["etas"], strict=False):
            key = (latest_eta["manifest"], stop)
            entry = by_stop.setdefault(
                key,
                {"manifest": key[0], "stop": stop, "status": "planned", "times": {}, "eta": None},
            )
            entry["eta"] = eta
            order.append(key)
    rest = [k for k in by_stop if k not in order]
    return [by_stop[k] for k in order + rest]


def latest_eta(db: SqlDb, vehicle: str) -> dict[str, Any] | None:
    with db.connect() as conn:
        for r in _latest(conn, vehicle, "eta"):
            return {"vehicle": vehicle, **convert.to_json(r)}
    return None


def vehicle_state(sql: SqlDb, vehicle: str, position: dict[str, Any] | None) -> dict[str, Any]:
    """The dispatcher's row for one van: position, speed (m/s, of the latest fix), state of
    charge (%), next stop and its ETA, open exceptions, each where known."""
    out: dict[str, Any] = {"vehicle": vehicle, "time": None, "lat": None, "lon": None}
    with sql.connect() as db:
        if position is not None:
            out.update(time=position["time"], lat=position["lat"], lon=position["lon"])
            row = db.execute(
                "SELECT body FROM records WHERE vehicle = ? AND seq = ?", (vehicle, position["seq"])
            ).fetchone()
            if row is not None:
                fix = pb.Record.FromString(bytes(row[0])).fix
                if fix.HasField("speed_cms"):
                    out["speed"] = fix.speed_cms / 100
        for r in _latest(db, vehicle, "signal"):
            if r.signal.name == SOC:
                out["soc"] = r.signal.value
                break
        for r in _latest(db, vehicle, "eta"):
            if r.eta.stops:
                out["next_stop"] = r.eta.stops[0]
                out["eta"] = convert.to_json(r)["etas"][0]
            break
    alerts = records(sql, vehicle, ("alert",))
    out["open_exceptions"] = [
        {"code": e["code"], "time": e["time"], "message": e["message"]}
        for e in exceptions(alerts)
        if e["open"]
    ]
    return out


@dataclass(frozen=True, slots=True)
class Photo:
    """A reassembled blob whose bytes matched its SHA-256 (``cloud.blobs``); ``data`` is loaded
    only by :func:`photo`, so listing the proofs of a day never reads the images."""

    blob: str
    delivery: str
    media_type: str
    size: int
    data: bytes = b""


def _blobs(db: SqlDb) -> Blobs | None:
    """The collector's reassembled blobs beside the store, read-only; None before it has any
    (no connection is held between calls: nothing to close)."""
    where = db.beside(".blobs")
    return Blobs(where, readonly=True) if where.exists() else None


def _complete(blobs: Blobs, vehicle: str) -> dict[str, Photo]:
    return {
        b["blob"]: Photo(b["blob"], b["delivery"], b["media_type"], b["size"])
        for b in blobs.list(vehicle)
        if b["complete"]
    }


def photos(db: SqlDb, vehicle: str) -> dict[str, Photo]:
    """Complete blobs by id, without their bytes: every chunk arrived and the joined bytes match
    ``sha256``; incomplete or set-aside ones are left out until (unless) the rest arrives."""
    blobs = _blobs(db)
    if blobs is None:
        return {}
    return _complete(blobs, vehicle)


def photo(db: SqlDb, vehicle: str, blob: str) -> Photo | None:
    """One complete blob with its verified bytes, or None."""
    blobs = _blobs(db)
    if blobs is None:
        return None
    found = _complete(blobs, vehicle).get(blob)
    data = None if found is None else blobs.get(vehicle, blob)
    if found is None or data is None:
        return None
    return Photo(found.blob, found.delivery, found.media_type, found.size, data)


def deliveries(db: SqlDb, vehicle: str) -> list[dict[str, Any]]:
    """Proofs of delivery, each with ``photos``: the complete blobs proving it (``<stop>/<parcel>``)."""
    found = photos(db, vehicle)
    out = []
    for d in records(db, vehicle, ("delivery",)):
        key = f"{d['stop']}/{d['parcel']}"
        d["photos"] = [
            {"blob": p.blob, "media_type": p.media_type, "bytes": p.size}
            for p in found.values()
            if p.delivery == key
        ]
        out.append(d)
    return out
