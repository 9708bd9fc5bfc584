"""Vehicle state: readings update what the van knows of itself and are committed as they are."""

from __future__ import annotations

from agent.events import CoreEvent
from agent.stages.base import NOTHING, StageOutput, VehicleState
from protocols.records import Fix, Scan, Signal

SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
SPEED = "Vehicle.Speed"
IGNITION = "Vehicle.LowVoltageSystemState"


class VehicleStage:
    """Fixes, signals and scans become state and records (each reading is one record, unchanged)."""

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        if isinstance(event, Fix):
            state.fix = event
        elif isinstance(event, Signal):
            if event.name == SOC:
                state.soc_percent = event.value
            elif event.name == SPEED:
                state.speed_kmh = event.value
            elif event.name == IGNITION:
                state.ignition = event.value
        elif isinstance(event, Scan):
            state.last_scan = event
        else:
            return NOTHING
        return StageOutput(records=(event,))
