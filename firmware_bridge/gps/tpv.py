"""gpsd's TPV report <-> ``Fix``. The JSON field names of ``dropline decode gps`` are gpsd's."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firmware_bridge.gps.timebase import GPS_EPOCH, LAST_TIME
from protocols.records import Fix, iso_time, parse_iso_time
from protocols.rejects import Rejects


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def fix_from_tpv(obj: dict[str, Any]) -> Fix | None:
    """A Fix from one TPV object, or None when it carries no position.

    gpsd sends TPVs with ``mode`` 0/1 (no fix) and, during acquisition, TPVs without ``time``,
    ``lat`` or ``lon``: those are not positions and must never become one (no 0,0 fixes). A time
    that cannot be read or lies outside ``[GPS_EPOCH, LAST_TIME)`` (``0001-01-01T00:00:00+14:00``
    is year 0 in UTC) is no position either. gpsd has already resolved week rollovers, so no
    host-clock bound is applied here: gpsd replaying old logs legitimately reports future dates.
    """
    if obj.get("class") != "TPV":
        return None
    mode = obj.get("mode")
    lat, lon = _number(obj, "lat"), _number(obj, "lon")
    time_text = obj.get("time")
    if mode not in (2, 3) or lat is None or lon is None or not isinstance(time_text, str):
        return None
    if obj.get("status") == 8:  # gpsd's "simulated" (a receiver in demo mode): not where the van is
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    try:
        parsed = parse_iso_time(time_text)
    except (ValueError, OverflowError, OSError):
        return None
    if not GPS_EPOCH <= parsed < LAST_TIME:
        return None
    t = parsed
    sats = obj.get("nSat")
    return Fix(
        time=t,
        mode=int(mode),
        lat=lat,
        lon=lon,
        alt_msl=_number(obj, "altMSL") if _number(obj, "altMSL") is not None else _number(obj, "alt"),
        speed=_number(obj, "speed"),
        track=_number(obj, "track"),
        hdop=_number(obj, "hdop"),
        sats=sats if isinstance(sats, int) and not isinstance(sats, bool) else None,
    )


def fix_to_tpv(fix: Fix) -> dict[str, Any]:
    """The JSON object ``dropline decode gps`` prints: gpsd TPV names, absent fields omitted."""
    out: dict[str, Any] = {"time": iso_time(fix.time), "mode": fix.mode, "lat": fix.lat, "lon": fix.lon}
    for key, value in (
        ("altMSL", fix.alt_msl),
        ("speed", fix.speed),
        ("track", fix.track),
        ("hdop", fix.hdop),
        ("sats", fix.sats),
    ):
        if value is not None:
            out[key] = value
    return out


def read_trace(path: Path, rejects: Rejects | None = None) -> Iterator[Fix]:
    """Fixes from a TRACE file (JSON lines with at least ``time``, ``lat``, ``lon``, as
    ``dropline decode gps`` writes them). A line that is not a usable fix (not JSON, not an
    object, no readable time, latitude 91, NaN) is counted in ``rejects`` (``bad_json``,
    ``not_object``, ``not_a_fix``) and skipped: the fixes around it still come out."""
    counter = rejects if rejects is not None else Rejects("trace")
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                counter.reject("bad_json", f"{path}:{number}")
                continue
            if not isinstance(row, dict):
                counter.reject("not_object", f"{path}:{number}")
                continue
            row.setdefault("class", "TPV")
            row.setdefault("mode", 3 if "altMSL" in row else 2)
            fix = fix_from_tpv(row)
            if fix is None:
                counter.reject("not_a_fix", f"{path}:{number}: needs time (ISO 8601), lat and lon in range")
                continue
            yield fix
