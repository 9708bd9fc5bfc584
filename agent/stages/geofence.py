"""The geofence stage: each fix through the detector (``agent/geofence.py``), its decisions as
:class:`FenceEvent` records; a manifest document replaces the fences between two fixes.

A ``manifest`` :class:`agent.events.Document` is checked (``agent/manifest.py``); a good one
replaces the fences (depot, stops, zones: kept fences keep their state) and is answered with a
:class:`DocumentStatus` applied, a bad one with applied false and the reason, the old one kept.
Later stages (the route) read :attr:`GeofenceStage.manifest` and :attr:`GeofenceStage.events`
(the events of the current event only), so they run after this one.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.events import CoreEvent, Document
from agent.geofence import Fence, Geofence, Rules
from agent.manifest import Manifest, loads
from agent.stages.base import NOTHING, StageOutput, VehicleState
from protocols.errors import InputError
from protocols.records import DocumentStatus, FenceEvent, Fix


class GeofenceStage:
    """Fixes in, fence events out."""

    def __init__(self, rules: Rules | None = None, fences: Sequence[Fence] = ()) -> None:
        self.geofence = Geofence(fences, rules)
        self.manifest: Manifest | None = None
        self.events: tuple[FenceEvent, ...] = ()

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        self.events = ()
        if isinstance(event, Fix):
            self.events = tuple(
                FenceEvent(t, fence, kind, lat, lon)
                for t, fence, kind, lat, lon in self.geofence.update(
                    event.time, event.lat, event.lon, event.mode, event.hdop
                )
            )
            return StageOutput(records=self.events) if self.events else NOTHING
        if isinstance(event, Document) and event.kind == "manifest":
            try:
                manifest = loads(event.body)
            except InputError as exc:
                return StageOutput(records=(DocumentStatus(event.time, "manifest", 0, False, str(exc)),))
            self.geofence.replace(manifest.fences)
            self.manifest = manifest
            return StageOutput(
                records=(DocumentStatus(event.time, f"manifest:{manifest.manifest_id}", 0, True),)
            )
        return NOTHING
