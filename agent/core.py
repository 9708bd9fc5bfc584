"""The agent's functional core: one object fed one event at a time, returning the records to
persist and the effects the shell must run. No clock, thread or socket inside: time comes only
from the events, so a recorded day replays to exactly the same records.

The core is a pipeline of :class:`agent.stages.base.Stage` objects run in order for every event;
its records are the stages' records in stage order. The shell (``agent/runtime.py`` live,
``agent/replay.py`` from files) is the only caller, on one thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.events import CoreEvent
from agent.stages.base import Effect, Stage, StageOutput, VehicleState
from agent.stages.gps_watch import GpsWatch
from agent.stages.receipts import Receipts
from agent.stages.vehicle import VehicleStage
from protocols.records import Record


def default_stages(gps_lost_s: float = 10.0) -> list[Stage]:
    """The stages a van runs, in order: vehicle state, the GPS-lost rule, shell receipts."""
    return [VehicleStage(), GpsWatch(gps_lost_s), Receipts()]


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
