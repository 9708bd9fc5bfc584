"""The route stage: stop progress, proof of delivery and delivery exceptions, on event time.

It runs after :class:`agent.stages.geofence.GeofenceStage` and reads its manifest and the fence
events of the current event. The rules:

* **Stop progress** (:class:`StopUpdate`): ``arrived`` at the enter of the stop's fence (its time
  is the crossing's) or at a delivery there before that enter is confirmed, whichever comes
  first; ``serving`` at the first proof of delivery there; ``completed`` when every parcel of the
  stop is delivered (a stop without parcels: at departure); ``departed`` at the exit; ``skipped``
  for every stop not completed when the van enters the depot after leaving it or arriving at a
  stop.
* **Proof of delivery** (:class:`Delivery`): a scan whose parcel (``agent.manifest.scan_keys``)
  belongs to stop S while the van is at S: inside S's fence by the detector, or its latest fix
  inside S's fence grown by the band (a driver scans before the arrival is confirmed). Once per
  parcel; a repeated scan is not a second delivery.
* **Exceptions** (:class:`Alert`), each raised once with its evidence in ``attrs`` and cleared by
  an ``info`` alert ``<code>_cleared``:

  - ``extended_dwell``: at a stop longer than ``service_s x dwell_factor`` (timed at arrival +
    that, like ``gps_lost``); cleared at departure;
  - ``scan_outside_fence``: a manifest parcel scanned away from every stop's fence; cleared when
    it is delivered;
  - ``parcel_wrong_stop``: a manifest parcel scanned at another stop; cleared when delivered;
  - ``parcel_not_in_manifest``: a scan no manifest parcel matches (once per parcel); cleared if a
    later manifest lists it;
  - ``idling``: ignition ON or START (VSS ``LowVoltageSystemState`` >= 4) and CAN speed at most
    ``idle_speed_kmh`` for ``idle_s`` (timed at the start + ``idle_s``); cleared when either ends;
  - ``restricted_zone``: the enter of a ``restricted`` fence; cleared at its exit;
  - GPS lost: :class:`agent.stages.gps_watch.GpsWatch` (``gps_lost`` / ``gps_restored``).

Scan exceptions need a manifest; idling does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.events import CoreEvent
from agent.manifest import Manifest, Stop, scan_keys
from agent.stages.base import NOTHING, StageOutput, VehicleState
from agent.stages.geofence import GeofenceStage
from protocols.records import Alert, Delivery, FenceEvent, Fix, Record, Scan, Signal, StopUpdate, iso_time

IGNITION_ON = 4.0
"""VSS LowVoltageSystemState ON as the mappings encode it (0 UNDEFINED .. 4 ON, 5 START)."""


@dataclass(frozen=True)
class RouteRules:
    """Thresholds of the exceptions (``[route]`` in the agent configuration)."""

    dwell_factor: float = 2.0
    idle_s: float = 300.0
    idle_speed_kmh: float = 2.0


@dataclass
class _Visit:
    arrived: float
    dwell_alert: bool = False


def _f(x: float) -> str:
    return f"{x:.7f}"


class RouteStage:
    """Stop progress, deliveries and exceptions for the geofence stage's manifest."""

    def __init__(self, geofence: GeofenceStage, rules: RouteRules | None = None) -> None:
        self.geofence = geofence
        self.rules = rules if rules is not None else RouteRules()
        self._manifest: Manifest | None = None
        self._stops: dict[str, Stop] = {}
        self._visits: dict[str, _Visit] = {}
        self._delivered: set[str] = set()
        self._served: set[str] = set()
        self._closed: set[str] = set()  # completed or skipped
        self._open: dict[tuple[str, str], dict[str, str]] = {}  # (code, subject) -> attrs
        self._unknown: dict[str, str] = {}  # parcel key -> raw, raised as not in manifest
        self._left_depot = False
        self._idle_since: float | None = None
        self._restricted: set[str] = set()

    # -- bookkeeping -----------------------------------------------------------------------

    def _raise(
        self, out: list[Record], t: float, code: str, subject: str, message: str, attrs: dict[str, str]
    ) -> None:
        if (code, subject) in self._open:
            return
        self._open[(code, subject)] = attrs
        out.append(Alert(t, code, "warning", message, attrs))

    def _clear(
        self,
        out: list[Record],
        t: float,
        code: str,
        subject: str,
        message: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        attrs = self._open.pop((code, subject), None)
        if attrs is not None:
            out.append(Alert(t, f"{code}_cleared", "info", message, {**attrs, **(extra or {})}))

    def _update(self, out: list[Record], t: float, stop: str, status: str) -> None:
        assert self._manifest is not None
        out.append(StopUpdate(t, self._manifest.manifest_id, stop, status))

    def _new_manifest(self, out: list[Record], t: float, manifest: Manifest) -> None:
        if self._manifest is not None and manifest.manifest_id == self._manifest.manifest_id:
            # a revision of the same route: progress carries over, stops it dropped are forgotten
            self._manifest = manifest
            self._stops = {s.id: s for s in manifest.stops}
            for gone in [stop for stop in self._visits if stop not in self._stops]:
                del self._visits[gone]
                self._open.pop(("extended_dwell", gone), None)
            return
        self._manifest = manifest
        self._stops = {s.id: s for s in manifest.stops}
        self._visits.clear()
        self._delivered.clear()
        self._served.clear()
        self._closed.clear()
        self._left_depot = False
        for key in sorted(self._unknown):
            if key in manifest.parcel_stop:
                self._clear(
                    out, t, "parcel_not_in_manifest", key, f"{key} is in manifest {manifest.manifest_id}"
                )
                del self._unknown[key]

    # -- rules -------------------------------------------------------------------------------

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        out: list[Record] = []
        manifest = self.geofence.manifest
        if manifest is not None and manifest is not self._manifest:
            self._new_manifest(out, event.time, manifest)
        for fence_event in self.geofence.events:
            self._on_fence(out, fence_event)
        if isinstance(event, Scan) and self._manifest is not None:
            self._on_scan(out, event, state)
        self._timers(out, event, state)
        return StageOutput(records=tuple(out)) if out else NOTHING

    def _on_fence(self, out: list[Record], e: FenceEvent) -> None:
        manifest = self._manifest
        if manifest is not None and e.fence == manifest.depot.id:
            if e.event == "exit":
                self._left_depot = True
            elif e.event == "enter" and self._left_depot:
                for pending in manifest.stops:
                    if pending.id not in self._closed:
                        self._closed.add(pending.id)
                        self._update(out, e.time, pending.id, "skipped")
            return
        stop = self._stops.get(e.fence)
        if stop is not None:
            if e.event == "enter":
                self._left_depot = True
                visit = self._visits.get(stop.id)
                if visit is None:
                    self._visits[stop.id] = _Visit(e.time)
                    self._update(out, e.time, stop.id, "arrived")
                else:  # arrived already by a delivery scan: the crossing is the better time
                    visit.arrived = min(visit.arrived, e.time)
            elif e.event == "exit":
                visit = self._visits.pop(stop.id, None)
                self._update(out, e.time, stop.id, "departed")
                if visit is not None:
                    self._clear(
                        out,
                        e.time,
                        "extended_dwell",
                        stop.id,
                        f"left stop {stop.id}",
                        {"departed": iso_time(e.time), "dwell_s": f"{e.time - visit.arrived:.0f}"},
                    )
                if not stop.parcels and stop.id not in self._closed:
                    self._closed.add(stop.id)
                    self._update(out, e.time, stop.id, "completed")
            return
        kind = next((f.kind for f in self.geofence.geofence.detector.index.fences if f.id == e.fence), "")
        if kind == "restricted":
            if e.event == "enter":
                self._raise(
                    out,
                    e.time,
                    "restricted_zone",
                    e.fence,
                    f"entered restricted zone {e.fence}",
                    {"fence": e.fence, "lat": _f(e.lat), "lon": _f(e.lon), "entered": iso_time(e.time)},
                )
            elif e.event == "exit":
                self._clear(
                    out,
                    e.time,
                    "restricted_zone",
                    e.fence,
                    f"left restricted zone {e.fence}",
                    {"left": iso_time(e.time)},
                )

    def _at_stop(self, stop: Stop, fix: Fix | None) -> bool:
        if stop.id in self._visits:
            return True
        if fix is None:
            return False
        detector = self.geofence.geofence.detector
        index = detector.index
        try:
            i = index.ids.index(stop.id)
        except ValueError:
            return False
        return bool(index.signed_distance(i, fix.lat, fix.lon) >= -detector.rules.band_m)

    def _on_scan(self, out: list[Record], scan: Scan, state: VehicleState) -> None:
        manifest = self._manifest
        assert manifest is not None
        keys = scan_keys(scan)
        parcel = next((k for k in keys if k in manifest.parcel_stop), None)
        fix = state.fix
        where = {"lat": _f(fix.lat), "lon": _f(fix.lon)} if fix is not None else {}
        if parcel is None:
            key = keys[0]
            if key not in self._unknown:
                self._unknown[key] = scan.raw
                self._raise(
                    out,
                    scan.time,
                    "parcel_not_in_manifest",
                    key,
                    f"{scan.raw} is not in manifest {manifest.manifest_id}",
                    {"parcel": key, "raw": scan.raw, "kind": scan.kind, **where},
                )
            return
        if parcel in self._delivered:
            return
        stop = self._stops[manifest.parcel_stop[parcel]]
        if self._at_stop(stop, fix):
            if stop.id not in self._visits:  # a delivery before the arrival is confirmed
                self._left_depot = True
                self._visits[stop.id] = _Visit(scan.time)
                self._update(out, scan.time, stop.id, "arrived")
            self._delivered.add(parcel)
            out.append(
                Delivery(
                    scan.time,
                    manifest.manifest_id,
                    stop.id,
                    parcel,
                    scan.raw,
                    fix.lat if fix else 0.0,
                    fix.lon if fix else 0.0,
                    fix.mode if fix else 0,
                    fix.hdop if fix else None,
                )
            )
            for code in ("scan_outside_fence", "parcel_wrong_stop"):
                self._clear(out, scan.time, code, parcel, f"{parcel} delivered at stop {stop.id}")
            if stop.id not in self._served:
                self._served.add(stop.id)
                self._update(out, scan.time, stop.id, "serving")
            if stop.id not in self._closed and all(p in self._delivered for p in stop.parcels):
                self._closed.add(stop.id)
                self._update(out, scan.time, stop.id, "completed")
            return
        here = next((s for s in manifest.stops if s.id != stop.id and self._at_stop(s, fix)), None)
        if here is not None:
            self._raise(
                out,
                scan.time,
                "parcel_wrong_stop",
                parcel,
                f"{parcel} belongs to stop {stop.id}, scanned at {here.id}",
                {"parcel": parcel, "stop": stop.id, "at_stop": here.id, **where},
            )
        else:
            self._raise(
                out,
                scan.time,
                "scan_outside_fence",
                parcel,
                f"{parcel} scanned away from stop {stop.id}",
                {"parcel": parcel, "stop": stop.id, **where},
            )

    def _timers(self, out: list[Record], event: CoreEvent, state: VehicleState) -> None:
        now = state.time
        for stop_id, visit in sorted(self._visits.items()):
            limit = self._stops[stop_id].service_s * self.rules.dwell_factor
            if not visit.dwell_alert and now - visit.arrived > limit:
                visit.dwell_alert = True
                self._raise(
                    out,
                    visit.arrived + limit,
                    "extended_dwell",
                    stop_id,
                    f"at stop {stop_id} longer than {limit:g} s",
                    {
                        "stop": stop_id,
                        "arrived": iso_time(visit.arrived),
                        "service_s": f"{self._stops[stop_id].service_s:g}",
                        "factor": f"{self.rules.dwell_factor:g}",
                    },
                )
        if isinstance(event, Signal) or self._idle_since is not None:
            idle = (
                state.ignition is not None
                and state.ignition >= IGNITION_ON
                and state.speed_kmh is not None
                and state.speed_kmh <= self.rules.idle_speed_kmh
            )
            if idle and self._idle_since is None:
                self._idle_since = event.time
            elif not idle and self._idle_since is not None:
                self._clear(
                    out,
                    event.time,
                    "idling",
                    "",
                    "idling ended",
                    {"ended": iso_time(event.time), "idle_s": f"{event.time - self._idle_since:.0f}"},
                )
                self._idle_since = None
            if self._idle_since is not None and now - self._idle_since > self.rules.idle_s:
                fix = state.fix
                self._raise(
                    out,
                    self._idle_since + self.rules.idle_s,
                    "idling",
                    "",
                    f"ignition on and stationary for {self.rules.idle_s:g} s",
                    {
                        "since": iso_time(self._idle_since),
                        **({"lat": _f(fix.lat), "lon": _f(fix.lon)} if fix else {}),
                    },
                )
