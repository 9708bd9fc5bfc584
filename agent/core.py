"""The agent's functional core: one object fed one event at a time, returning the records to
persist. No clock, thread or socket inside: time comes only from the events, so a recorded day
replays to exactly the same records.

Today it keeps vehicle state and turns readings into records; the geofence detector, the
route (stop progress, resequencing, ETAs), the alert rules and the compactor plug in here as
further steps of ``handle`` (each a pure object with the same shape).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.records import Event, Fix, Record, Scan, Signal, Tick

SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
SPEED = "Vehicle.Speed"
IGNITION = "Vehicle.LowVoltageSystemState"


@dataclass
class VehicleState:
    """What the van knows of itself right now, as of ``time`` (the latest event time)."""

    time: float = 0.0
    fix: Fix | None = None
    soc_percent: float | None = None
    speed_kmh: float | None = None
    ignition: float | None = None
    last_scan: Scan | None = None


class Core:
    """Events in, records out. Not thread-safe by design: the shell feeds it from one thread."""

    def __init__(self) -> None:
        self.state = VehicleState()

    def handle(self, event: Event) -> list[Record]:
        state = self.state
        state.time = max(state.time, event.time)
        if isinstance(event, Fix):
            state.fix = event
            return [event]
        if isinstance(event, Signal):
            if event.name == SOC:
                state.soc_percent = event.value
            elif event.name == SPEED:
                state.speed_kmh = event.value
            elif event.name == IGNITION:
                state.ignition = event.value
            return [event]
        if isinstance(event, Scan):
            state.last_scan = event
            return [event]
        assert isinstance(event, Tick)
        return []
