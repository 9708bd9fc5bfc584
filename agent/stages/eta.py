"""The ETA stage: an ETA for every remaining stop of the manifest on every fix, ETA-erosion
exceptions, and resequencing requested from the shell.

It runs after :class:`agent.stages.route.RouteStage` and reads its manifest, the stops it has
closed (completed or skipped) and the geofence stage's fence events (a stop's enter to exit is a
service time learned by :class:`agent.eta.ServiceTimes`). The rules:

* **ETAs** (:class:`protocols.records.Eta`): computed on every fix by :class:`agent.eta.EtaEstimator`
  for the remaining stops in the current order (the manifest's, then the resequencer's);
  committed when the set of stops changes or any ETA moved by more than ``margin_s`` since the
  last committed one.
* **ETA erosion** (:class:`protocols.records.Alert` ``eta_erosion``): a stop whose ETA passes its
  window end by more than ``late_margin_s`` on every fix for ``confirm_s``; raised once per stop
  with the expected lateness, cleared (``eta_erosion_cleared``) when its ETA has stayed
  ``clear_margin_s`` before the window end for ``confirm_s`` (no flapping while the van's pace is
  still being learned), or at once when the stop is closed.
* **Resequencing** (:class:`agent.stages.base.Effect` ``resequence``): requested when a stop
  starts eroding, at most once per ``resequence_every_s``; its arguments are the whole problem
  (:func:`resequence_args`), so the shell's handler (``agent.effects.resequence``) needs nothing
  else. The answer comes back as an :class:`agent.events.EffectResult` (recorded by the receipts
  stage, so a replay reproduces it) and becomes the order if it is for the current manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.eta import EtaEstimator, EtaStop, great_circle_m
from agent.events import CoreEvent, EffectResult
from agent.manifest import Manifest
from agent.stages.base import NOTHING, Effect, StageOutput, VehicleState
from agent.stages.route import RouteStage
from protocols.records import Alert, Eta, Fix, Record

RESEQUENCE = "resequence"


@dataclass(frozen=True)
class EtaRules:
    """Thresholds of the ETA stage."""

    margin_s: float = 60.0
    late_margin_s: float = 0.0
    clear_margin_s: float = 60.0
    confirm_s: float = 60.0
    resequence_every_s: float = 300.0
    resequence_budget_s: float = 0.5


def resequence_args(
    estimator: EtaEstimator,
    manifest_id: str,
    time: float,
    lat: float,
    lon: float,
    order: list[str],
    depot: EtaStop,
) -> dict[str, str]:
    """The resequencing problem as effect arguments (JSON strings): node 0 is the van now, the
    stops follow in the current order, the last node is the depot; travel and service in seconds
    from the estimator, windows relative to ``time``."""
    stops = [estimator.stops[s] for s in order]
    nodes: list[EtaStop] = [EtaStop("@van", lat, lon), *stops, depot]
    travel = []
    for i, a in enumerate(nodes):
        row = []
        for j, b in enumerate(nodes):
            if i == j:
                row.append(0.0)
            elif i == 0:
                row.append(estimator.profile.seconds(great_circle_m(a.lat, a.lon, b.lat, b.lon)))
            else:
                row.append(estimator.travel_s(a, b))
        travel.append([round(x, 3) for x in row])
    service = [0.0, *(estimator.service.estimate(s.kind, s.service_s) for s in stops), 0.0]
    earliest = [0.0, *(max(0.0, (s.earliest or time) - time) for s in stops), 0.0]
    latest = [0.0, *((s.latest - time) if s.latest is not None else 1e9 for s in stops), 1e9]
    return {
        "manifest": manifest_id,
        "stops": json.dumps(order),
        "travel": json.dumps(travel),
        "service": json.dumps([round(x, 3) for x in service]),
        "earliest": json.dumps([round(x, 3) for x in earliest]),
        "latest": json.dumps([round(x, 3) for x in latest]),
    }


class EtaStage:
    """ETAs, ETA erosion and resequencing for the route stage's manifest."""

    def __init__(self, route: RouteStage, rules: EtaRules | None = None) -> None:
        self.route = route
        self.rules = rules if rules is not None else EtaRules()
        self._manifest: Manifest | None = None
        self._estimator: EtaEstimator | None = None
        self._depot = EtaStop("depot", 0.0, 0.0)
        self.order: list[str] = []
        self._sent: tuple[tuple[str, ...], tuple[float, ...]] | None = None
        self._eroding: dict[str, dict[str, str]] = {}
        self._late_since: dict[str, float] = {}
        self._ok_since: dict[str, float] = {}
        self._entered: dict[str, float] = {}
        self._last_request: float | None = None

    def _new_manifest(self, manifest: Manifest) -> None:
        same = self._manifest is not None and self._manifest.manifest_id == manifest.manifest_id
        stops = {
            s.id: EtaStop(s.id, s.lat, s.lon, s.service_s, "stop", s.window[0], s.window[1])
            for s in manifest.stops
        }
        matrix: dict[str, dict[str, float]] | None = None
        if manifest.travel_time_s:
            matrix = {}
            for (a, b), seconds in manifest.travel_time_s.items():
                matrix.setdefault(a, {})[b] = seconds
        if same and self._estimator is not None:
            # a revision (a new traffic matrix): keep what the van learned and the order
            self._estimator.stops = stops
            self._estimator.matrix = matrix
            self.order = [s for s in self.order if s in stops] + [s for s in stops if s not in self.order]
        else:
            self._estimator = EtaEstimator(stops, matrix)
            self.order = list(stops)
            self._sent = None
            self._last_request = None
        self._manifest = manifest
        self._depot = EtaStop(manifest.depot.id, manifest.depot.lat, manifest.depot.lon)

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        manifest = self.route.geofence.manifest
        if manifest is not None and manifest is not self._manifest:
            self._new_manifest(manifest)
        estimator = self._estimator
        if estimator is None or self._manifest is None:
            return NOTHING
        for fence_event in self.route.geofence.events:
            if fence_event.fence in estimator.stops:
                if fence_event.event == "enter":
                    self._entered[fence_event.fence] = fence_event.time
                elif fence_event.event == "exit" and fence_event.fence in self._entered:
                    estimator.served(
                        fence_event.fence, fence_event.time - self._entered.pop(fence_event.fence)
                    )
        if isinstance(event, EffectResult) and event.effect == RESEQUENCE:
            self._adopt(event)
            return NOTHING
        if isinstance(event, Fix):
            return self._on_fix(event, estimator, self._manifest)
        return NOTHING

    def _end(self, stop: str) -> float:
        assert self._estimator is not None
        end = self._estimator.stops[stop].latest
        return end if end is not None else float("inf")

    def _adopt(self, result: EffectResult) -> None:
        if self._manifest is None or result.result.get("manifest") != self._manifest.manifest_id:
            return
        try:
            proposed = json.loads(result.result.get("order", "null"))
        except ValueError:
            return
        if not isinstance(proposed, list):
            return
        known = [s for s in proposed if isinstance(s, str) and s in self.order]
        self.order = list(dict.fromkeys(known)) + [s for s in self.order if s not in known]

    def _on_fix(self, fix: Fix, estimator: EtaEstimator, manifest: Manifest) -> StageOutput:
        estimator.on_fix(fix.time, fix.lat, fix.lon)
        closed = self.route._closed
        remaining = [s for s in self.order if s not in closed]
        etas = [
            fix.time if s in self._entered else eta
            for s, eta in zip(remaining, estimator.etas(fix.time, fix.lat, fix.lon, remaining), strict=True)
        ]
        out: list[Record] = []
        effects: list[Effect] = []
        stops, rounded = tuple(remaining), tuple(round(x, 1) for x in etas)
        sent = self._sent
        if (
            sent is None
            or sent[0] != stops
            or any(abs(a - b) > self.rules.margin_s for a, b in zip(sent[1], rounded, strict=True))
        ):
            out.append(Eta(fix.time, manifest.manifest_id, stops, rounded))
            self._sent = (stops, rounded)
        late = {s: x for s, x in estimator.late(remaining, etas).items() if x > self.rules.late_margin_s}
        for stop in [s for s in self._late_since if s not in late]:
            del self._late_since[stop]
        newly = False
        for stop, lateness in late.items():
            since = self._late_since.setdefault(stop, fix.time)
            if stop not in self._eroding and fix.time - since >= self.rules.confirm_s:
                attrs = {
                    "stop": stop,
                    "expected_lateness_s": f"{lateness:.0f}",
                    "eta": f"{etas[remaining.index(stop)]:.0f}",
                    "manifest": manifest.manifest_id,
                }
                self._eroding[stop] = attrs
                message = f"{stop} expected {lateness:.0f} s late"
                out.append(Alert(fix.time, "eta_erosion", "warning", message, attrs))
                newly = True
        for stop in list(self._eroding):
            gone = stop in closed or stop not in remaining  # closed, or dropped by a revision
            ok = gone or etas[remaining.index(stop)] <= self._end(stop) - self.rules.clear_margin_s
            if not ok:
                self._ok_since.pop(stop, None)
                continue
            since = self._ok_since.setdefault(stop, fix.time)
            if gone or fix.time - since >= self.rules.confirm_s:
                attrs = self._eroding.pop(stop)
                self._ok_since.pop(stop, None)
                why = "closed" if gone else "recovered"
                attrs = {**attrs, "why": why}
                out.append(Alert(fix.time, "eta_erosion_cleared", "info", f"{stop} {why}", attrs))
        if newly and (
            self._last_request is None or fix.time - self._last_request >= self.rules.resequence_every_s
        ):
            self._last_request = fix.time
            args = resequence_args(
                estimator, manifest.manifest_id, fix.time, fix.lat, fix.lon, remaining, self._depot
            )
            effects.append(Effect(fix.time, RESEQUENCE, args, self.rules.resequence_budget_s))
        if not out and not effects:
            return NOTHING
        return StageOutput(tuple(out), tuple(effects))
