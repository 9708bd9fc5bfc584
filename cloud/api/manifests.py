"""Manifests the collector knows (``--manifests DIR``: one JSON file per manifest, as
``protocols/manifest.schema.json`` describes): the stops' windows and places, and each
manifest's depot. Records name a manifest and a stop but carry no window, so on-time figures and
a tracking page's window need these. Read on each call (a handful of small files), so a new
manifest dropped into the directory counts at once; unreadable files are logged and skipped."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Plans:
    stops: dict[tuple[str, str], StopPlan]
    depots: dict[str, str]

    def windows(self) -> dict[tuple[str, str], tuple[float, float]]:
        return {k: p.window for k, p in self.stops.items()}

    def find(self, vehicle: str, stop: str) -> StopPlan | None:
        """The stop of that id in a manifest of that vehicle (the last file in name order wins)."""
        found = [p for p in self.stops.values() if p.vehicle == vehicle and p.stop == stop]
        return found[-1] if found else None


def load(directory: Path | None) -> Plans:
    stops: dict[tuple[str, str], StopPlan] = {}
    depots: dict[str, str] = {}
    if directory is None:
        return Plans(stops, depots)
    for path in sorted(directory.glob("*.json")):
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
            mid, vehicle = str(doc["manifest_id"]), str(doc["vehicle"])
            depots[mid] = str(doc["depot"]["id"])
            for s in doc["stops"]:
                window = (parse_iso_time(s["window"][0]), parse_iso_time(s["window"][1]))
                stops[(mid, str(s["id"]))] = StopPlan(
                    mid, vehicle, str(s["id"]), float(s["lat"]), float(s["lon"]), window
                )
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("manifest %s skipped: %s", path, exc)
    return Plans(stops, depots)
