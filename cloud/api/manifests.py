"""Manifests the collector knows (``--manifests DIR``: one JSON file per manifest, as
``protocols/manifest.schema.json`` describes): the stops' windows and places, each manifest's
depot, and its fences (GeoJSON polygons, or points with ``radius_m``: circles) for the map.
Records name a manifest and a stop but carry no window, so on-time figures and a tracking page's
window need these. Read on each call (a handful of small files), so a new
manifest dropped into the directory counts at once; unreadable files are logged and skipped, and
so is a fence whose geometry is not a usable polygon or circle (the rest of its manifest counts)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.records import parse_iso_time

log = logging.getLogger("dropline.collector")


@dataclass(frozen=True, slots=True)
class StopPlan:
    manifest: str
    vehicle: str
    stop: str
    lat: float
    lon: float
    window: tuple[float, float]
    radius_m: float | None = None
    """The arrival circle; None where the manifest gives a polygon instead."""


@dataclass(frozen=True, slots=True)
class Plans:
    stops: dict[tuple[str, str], StopPlan]
    depots: dict[str, str]
    fences: list[dict[str, Any]] = field(default_factory=list)
    """GeoJSON Features: every manifest's fences and depot, each with ``properties`` ``id``,
    ``kind`` (``depot``, ``charger``, ``restricted``, ``zone``), ``manifest``, ``vehicle`` and,
    for a circle (a ``Point``), ``radius_m``. Coordinates are checked: [lon, lat] in range."""

    def windows(self) -> dict[tuple[str, str], tuple[float, float]]:
        return {k: p.window for k, p in self.stops.items()}

    def find(self, vehicle: str, stop: str) -> StopPlan | None:
        """The stop of that id in a manifest of that vehicle (the last file in name order wins)."""
        found = [p for p in self.stops.values() if p.vehicle == vehicle and p.stop == stop]
        return found[-1] if found else None


def load(directory: Path | None) -> Plans:
    stops: dict[tuple[str, str], StopPlan] = {}
    depots: dict[str, str] = {}
    fences: list[dict[str, Any]] = []
    if directory is None:
        return Plans(stops, depots, fences)
    for path in sorted(directory.glob("*.json")):
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
            mid, vehicle = str(doc["manifest_id"]), str(doc["vehicle"])
            depot_id = str(doc["depot"]["id"])
            planned: dict[tuple[str, str], StopPlan] = {}
            for s in doc["stops"]:
                window = (parse_iso_time(s["window"][0]), parse_iso_time(s["window"][1]))
                radius = float(s["radius_m"]) if "radius_m" in s else None
                planned[(mid, str(s["id"]))] = StopPlan(
                    mid, vehicle, str(s["id"]), float(s["lat"]), float(s["lon"]), window, radius
                )
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("manifest %s skipped: %s", path, exc)
            continue
        depots[mid] = depot_id
        stops.update(planned)
        found = [_place_feature(doc["depot"], "depot"), *_features(doc.get("fences"))]
        for feature in found:
            if feature is None:
                log.warning("manifest %s: a fence without a usable polygon or circle skipped", path)
                continue
            feature["properties"] |= {"manifest": mid, "vehicle": vehicle}
            fences.append(feature)
    return Plans(stops, depots, fences)


def _position(value: Any) -> list[float] | None:
    """A GeoJSON position [lon, lat] in range, or None."""
    if not isinstance(value, list) or len(value) < 2:
        return None
    lon, lat = value[0], value[1]
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lon, lat)
    ):
        return None
    return [float(lon), float(lat)] if -180 <= lon <= 180 and -90 <= lat <= 90 else None


def _polygon(rings: Any) -> list[list[list[float]]] | None:
    """A GeoJSON Polygon's rings (each closed, at least 4 positions), or None."""
    if not isinstance(rings, list) or not rings:
        return None
    out = []
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            return None
        points = [_position(p) for p in ring]
        if any(p is None for p in points) or points[0] != points[-1]:
            return None
        out.append([p for p in points if p is not None])
    return out


def _geometry(geometry: Any, radius_m: Any) -> dict[str, Any] | None:
    """A checked Polygon, MultiPolygon or Point (with a positive radius: a circle), or None."""
    if not isinstance(geometry, dict):
        return None
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        rings = _polygon(coordinates)
        return None if rings is None else {"type": kind, "coordinates": rings}
    if kind == "MultiPolygon" and isinstance(coordinates, list) and coordinates:
        polygons = [_polygon(p) for p in coordinates]
        return None if any(p is None for p in polygons) else {"type": kind, "coordinates": polygons}
    radius_ok = isinstance(radius_m, int | float) and math.isfinite(radius_m) and radius_m > 0
    if kind == "Point" and radius_ok:
        point = _position(coordinates)
        return None if point is None else {"type": kind, "coordinates": point}
    return None


def _feature(fid: str, kind: str, geometry: Any, radius_m: Any) -> dict[str, Any] | None:
    """A checked fence Feature, or None when its geometry is not a usable polygon or circle."""
    checked = _geometry(geometry, radius_m)
    if checked is None:
        return None
    properties: dict[str, Any] = {"id": fid, "kind": kind}
    if checked["type"] == "Point":
        properties["radius_m"] = float(radius_m)
    return {"type": "Feature", "properties": properties, "geometry": checked}


def _place_feature(place: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """A depot (or any place) as a fence: its polygon, else its circle."""
    circle = {"type": "Point", "coordinates": [place.get("lon"), place.get("lat")]}
    return _feature(str(place.get("id")), kind, place.get("geometry") or circle, place.get("radius_m"))


def _features(collection: Any) -> list[dict[str, Any] | None]:
    """The manifest's ``fences`` FeatureCollection, each checked (None for an unusable one)."""
    if not isinstance(collection, dict) or not isinstance(collection.get("features"), list):
        return []
    out: list[dict[str, Any] | None] = []
    for feature in collection["features"]:
        props = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or not isinstance(props.get("id"), str):
            out.append(None)
            continue
        kind = str(props.get("kind", "zone"))
        out.append(_feature(props["id"], kind, feature.get("geometry"), props.get("radius_m")))
    return out
