"""The agent's functional core: one object fed one event at a time, returning the records to
persist and the effects the shell must run. No clock, thread or socket inside: time comes only
from the events, so a recorded day replays to exactly the same records.

The core is a pipeline of :class:`agent.stages.base.Stage` objects run in order for every event;
its records are the stages' records in stage order. The shell (``agent/runtime.py`` live,
``agent/replay.py`` from files) is the only caller, on one thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.config import CompactionConfig, EtaConfig, RouteConfig
from agent.events import CoreEvent
from agent.geofence import Rules
from agent.stages.base import Effect, Stage, StageOutput, VehicleState
from agent.stages.compactor import Compactor, Deadband
from agent.stages.eta import EtaRules, EtaStage
from agent.stages.geofence import GeofenceStage
from agent.stages.gps_watch import GpsWatch
from agent.stages.receipts import Receipts
from agent.stages.route import RouteRules, RouteStage
from agent.stages.vehicle import VehicleStage
from protocols.records import Record


def default_stages(
    gps_lost_s: float = 10.0,
    route: RouteConfig | None = None,
    compaction: CompactionConfig | None = None,
    eta: EtaConfig | None = None,
) -> list[Stage]:
    """The stages a van runs, in order: vehicle state (committed through the compactor,
    ``compaction``), geofence, route (stop progress, proofs of delivery, exceptions), ETAs (ETA
    erosion, resequencing requests; ``eta``), the GPS-lost rule, shell receipts. With ``route``
    (``[route]``), its thresholds, ``gps_lost_s`` included; without, the defaults and ``gps_lost_s``."""
    if route is None:
        route = RouteConfig(gps_lost_s=gps_lost_s)
    rules = Rules(
        band_m=route.band_m,
        confirm_fixes=route.confirm_fixes,
        confirm_s=route.confirm_s,
        arrive_s=route.arrive_s,
        max_gap_s=route.max_gap_s,
        max_hdop=route.max_hdop,
        require_3d=route.require_3d,
    )
    geofence = GeofenceStage(rules)
    route_rules = RouteRules(route.dwell_factor, route.idle_s, route.idle_speed_kmh)
    compaction = compaction or CompactionConfig()
    eta = eta or EtaConfig()
    route_stage = RouteStage(geofence, route_rules)
    eta_rules = EtaRules(
        eta.margin_s,
        eta.late_margin_s,
        eta.clear_margin_s,
        eta.confirm_s,
        eta.resequence_every_s,
        eta.resequence_budget_s,
    )
    return [
        Compactor(
            VehicleStage(),
            compaction.max_error_m,
            compaction.max_hold_s,
            compaction.live_error_m,
            {name: Deadband(s.deadband, s.heartbeat_s) for name, s in compaction.signals.items()},
        ),
        geofence,
        route_stage,
        EtaStage(route_stage, eta_rules),
        GpsWatch(route.gps_lost_s),
        Receipts(),
    ]


class Core:
    """Events in, records and effects out. Not thread-safe by design: one thread feeds it."""

    def __init__(self, stages: Sequence[Stage] | None = None) -> None:
        self.state = VehicleState()
        self.stages: list[Stage] = list(default_stages() if stages is None else stages)

    def handle(self, event: CoreEvent) -> StageOutput:
        """Advance ``state.time`` to ``event.time`` (never back) and run every stage."""
        state = self.state
        state.time = max(state.time, event.time)
        records: list[Record] = []
        effects: list[Effect] = []
        for stage in self.stages:
            out = stage.handle(event, state)
            records += out.records
            effects += out.effects
        return StageOutput(tuple(records), tuple(effects))
