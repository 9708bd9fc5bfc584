"""The delivery manifest: loaded, checked against ``protocols/manifest.schema.json``, turned into
stops and fences.

The schema file is the truth. It is checked by a small validator of the JSON Schema keywords the
schema uses (``type``, ``required``, ``properties``, ``additionalProperties``, ``items``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``pattern``, ``enum``, ``minimum``/
``maximum``/``exclusiveMinimum``, ``anyOf``, local ``$ref``, ``format: date-time``) rather than
the ``jsonschema`` library, which with its ``referencing`` and ``rpds-py`` dependencies is too
heavy for a van; a keyword the validator does not know is an error, so the schema cannot silently
outgrow it. What a schema cannot say is checked after: unique ids, a window that ends after it
starts, a parcel at one stop only, a square travel-time matrix, valid GeoJSON rings. Every error
names the field (``manifest.stops[3].window[1]``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agent.geofence import Fence, fences_from_geojson, geometry_fence
from protocols.errors import InputError
from protocols.records import Scan, parse_iso_time

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "protocols" / "manifest.schema.json"


@dataclass(frozen=True)
class Stop:
    """One stop: its fence has the stop's id and kind ``stop``; ``window`` is (start, end) in
    Unix seconds."""

    id: str
    lat: float
    lon: float
    window: tuple[float, float]
    service_s: float
    parcels: tuple[str, ...]
    fence: Fence


@dataclass(frozen=True)
class Manifest:
    """A checked manifest. ``parcel_stop`` maps each parcel (as :func:`parcel_key` spells it) to
    its stop id; ``fences`` are the depot's, the stops' and the other zones', ids unique."""

    manifest_id: str
    vehicle: str
    depot: Fence
    stops: tuple[Stop, ...]
    zones: tuple[Fence, ...]
    parcel_stop: dict[str, str]
    travel_time_s: dict[tuple[str, str], float]

    @property
    def fences(self) -> list[Fence]:
        return [self.depot, *(s.fence for s in self.stops), *self.zones]


@cache
def schema() -> dict[str, Any]:
    """The manifest's JSON Schema."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return name == "number" or float(value).is_integer()
    return isinstance(value, _TYPES[name])


def validate(value: Any, node: dict[str, Any], where: str, root: dict[str, Any] | None = None) -> None:
    """Check ``value`` against schema ``node``; the first failure raises :class:`InputError`
    naming ``where`` and the rule."""
    root = root if root is not None else node
    for key, rule in node.items():
        if key in _ANNOTATIONS:
            continue
        if key == "$ref":
            if not rule.startswith("#/$defs/"):
                raise InputError(f"schema: only local $ref supported, got {rule}")
            validate(value, root["$defs"][rule[len("#/$defs/") :]], where, root)
        elif key == "type":
            if not _type_ok(value, rule):
                raise InputError(f"{where}: expected {rule}, got {json.dumps(value)[:60]}")
        elif key == "enum":
            if value not in rule:
                raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, rule))}")
        elif key == "anyOf":
            failures = []
            for option in rule:
                try:
                    validate(value, option, where, root)
                    break
                except InputError as exc:
                    failures.append(str(exc))
            else:
                raise InputError(f"{where}: none of the alternatives holds ({'; '.join(failures)})")
        elif not _type_ok(value, _keyword_type(key)):
            continue  # a keyword for another type (e.g. minLength on a number) does not apply
        elif key == "required":
            for name in rule:
                if name not in value:
                    raise InputError(f"{where}.{name}: required")
        elif key == "properties":
            for name, sub in rule.items():
                if name in value:
                    validate(value[name], sub, f"{where}.{name}", root)
        elif key == "additionalProperties":
            extra = sorted(set(value) - set(node.get("properties", {})))
            if rule is False and extra:
                raise InputError(f"{where}.{extra[0]}: unknown field")
        elif key == "items":
            for i, item in enumerate(value):
                validate(item, rule, f"{where}[{i}]", root)
        elif key in ("minItems", "minLength") and len(value) < rule:
            raise InputError(f"{where}: at least {rule} {'items' if key == 'minItems' else 'characters'}")
        elif key in ("maxItems", "maxLength") and len(value) > rule:
            raise InputError(f"{where}: at most {rule} {'items' if key == 'maxItems' else 'characters'}")
        elif key == "pattern" and not re.search(rule, value):
            raise InputError(f"{where}: {value!r} does not match {rule}")
        elif key == "minimum" and not value >= rule:
            raise InputError(f"{where}: {value} is below the minimum {rule}")
        elif key == "maximum" and not value <= rule:
            raise InputError(f"{where}: {value} is above the maximum {rule}")
        elif key == "exclusiveMinimum" and not value > rule:
            raise InputError(f"{where}: {value} must be greater than {rule}")
        elif key == "format":
            if rule != "date-time":
                raise InputError(f"schema: format {rule} not supported")
            if not _is_date_time(value):
                raise InputError(f"{where}: {value!r} is not an ISO 8601 date-time")


_KEYWORD_TYPES = {
    "required": "object",
    "properties": "object",
    "additionalProperties": "object",
    "items": "array",
    "minItems": "array",
    "maxItems": "array",
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "format": "string",
    "minimum": "number",
    "maximum": "number",
    "exclusiveMinimum": "number",
}


def _keyword_type(key: str) -> str:
    try:
        return _KEYWORD_TYPES[key]
    except KeyError:
        raise InputError(f"schema: keyword {key} not supported by agent/manifest.py") from None


def _is_date_time(text: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", text):
        return False
    try:
        parse_iso_time(text)
    except ValueError:
        return False
    return True


def parcel_key(text: str) -> str:
    """One spelling per parcel: an SSCC as its 18 digits (``(00)`` dropped), a GTIN with serial
    as ``(01)<14-digit gtin>(21)<serial>``, anything else (a tracking number) as written,
    upper-cased and without spaces."""
    text = text.strip().replace(" ", "")
    if re.fullmatch(r"(\(00\))?\d{18}", text):
        return text[-18:]
    m = re.fullmatch(r"\(01\)(\d{8,14})\(21\)(.+)", text)
    if m:
        return f"(01){m.group(1).zfill(14)}(21){m.group(2)}"
    return text.upper()


def scan_keys(scan: Scan) -> list[str]:
    """The parcel keys a scan may stand for: its SSCC, its GTIN with serial (AI 21), its courier
    tracking number; the raw string last."""
    f = scan.fields
    keys = []
    if f.get("sscc"):
        keys.append(f["sscc"])
    if f.get("gtin") and f.get("21"):
        keys.append(f"(01){f['gtin'].zfill(14)}(21){f['21']}")
    if f.get("tracking_number"):
        keys.append(f["tracking_number"].upper())
    keys.append(parcel_key(scan.raw))
    return keys


def _place_fence(place: dict[str, Any], kind: str, where: str) -> Fence:
    dwell = float(place.get("dwell_s", 0))
    if "geometry" in place:
        return geometry_fence(place["id"], kind, dwell, place["geometry"], {}, f"{where}.geometry")
    return Fence(
        place["id"],
        kind,
        dwell,
        lon=float(place["lon"]),
        lat=float(place["lat"]),
        radius_m=float(place["radius_m"]),
    )


def parse(doc: Any, where: str = "manifest") -> Manifest:
    """A checked manifest from parsed JSON; :class:`InputError` names the first bad field."""
    validate(doc, schema(), where)
    depot = _place_fence(doc["depot"], "depot", f"{where}.depot")
    stops: list[Stop] = []
    parcel_stop: dict[str, str] = {}
    ids = {depot.id: f"{where}.depot.id"}
    for i, s in enumerate(doc["stops"]):
        at = f"{where}.stops[{i}]"
        if s["id"] in ids:
            raise InputError(f"{at}.id: {s['id']!r} is already used by {ids[s['id']]}")
        ids[s["id"]] = f"{at}.id"
        start, end = (parse_iso_time(w) for w in s["window"])
        if end < start:
            raise InputError(f"{at}.window[1]: ends before the window starts")
        parcels = []
        for j, p in enumerate(s["parcels"]):
            key = parcel_key(p)
            if key in parcel_stop:
                raise InputError(f"{at}.parcels[{j}]: {p!r} is also listed at stop {parcel_stop[key]!r}")
            parcel_stop[key] = s["id"]
            parcels.append(key)
        stops.append(
            Stop(
                s["id"],
                float(s["lat"]),
                float(s["lon"]),
                (start, end),
                float(s["service_s"]),
                tuple(parcels),
                _place_fence(s, "stop", at),
            )
        )
    zones: list[Fence] = []
    if "fences" in doc:
        zones = fences_from_geojson(doc["fences"], f"{where}.fences")
        for i, z in enumerate(zones):
            if z.id in ids:
                raise InputError(
                    f"{where}.fences.features[{i}].properties.id: {z.id!r} is already used by {ids[z.id]}"
                )
    matrix: dict[tuple[str, str], float] = {}
    if "travel_time_s" in doc:
        tt = doc["travel_time_s"]
        n = len(tt["ids"])
        for i, row in enumerate(tt["seconds"]):
            if len(row) != n:
                raise InputError(f"{where}.travel_time_s.seconds[{i}]: {len(row)} entries, expected {n}")
        if len(tt["seconds"]) != n:
            raise InputError(f"{where}.travel_time_s.seconds: {len(tt['seconds'])} rows, expected {n}")
        for i, a in enumerate(tt["ids"]):
            if a not in ids:
                raise InputError(f"{where}.travel_time_s.ids[{i}]: {a!r} is not the depot or a stop")
            for j, b in enumerate(tt["ids"]):
                matrix[(a, b)] = float(tt["seconds"][i][j])
    return Manifest(
        doc["manifest_id"], doc["vehicle"], depot, tuple(stops), tuple(zones), parcel_stop, matrix
    )


def loads(body: bytes | str, where: str = "manifest") -> Manifest:
    """A checked manifest from JSON text."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{where}: not JSON ({exc})") from None
    return parse(doc, where)


def load(path: Path) -> Manifest:
    """A checked manifest from a file; errors name the file and field."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return loads(body, str(path))
