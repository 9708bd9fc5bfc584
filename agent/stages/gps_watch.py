"""The first timer on event time: ``gps_lost`` when no fix came for ``lost_after_s`` seconds of
event time, ``gps_restored`` at the first fix after that.

Any event advances the clock (ticks when nothing else happens), so the rule fires the same in a
replay (ticks derived from the merged stream) and live (ticks from the corrected clock). The
alert's time is the moment the fix became overdue (last fix + ``lost_after_s``), not the tick
that noticed it, so the record does not depend on the tick cadence. Before the first fix there is
nothing to lose: the rule starts with the first fix.
"""

from __future__ import annotations

from agent.events import CoreEvent
from agent.stages.base import NOTHING, StageOutput, VehicleState
from protocols.records import Alert, Fix, iso_time


class GpsWatch:
    """Watches the gap since the last fix; one ``gps_lost`` per outage, one ``gps_restored``."""

    def __init__(self, lost_after_s: float = 10.0) -> None:
        self.lost_after_s = lost_after_s
        self._last_fix: Fix | None = None
        self._lost = False

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        last = self._last_fix
        if isinstance(event, Fix):
            self._last_fix = event
            if self._lost and last is not None:
                self._lost = False
                gap = event.time - last.time
                return StageOutput(
                    records=(
                        Alert(
                            time=event.time,
                            code="gps_restored",
                            severity="info",
                            message=f"fixes again after {gap:.0f} s",
                            attrs={"gap_s": f"{gap:.3f}"},
                        ),
                    )
                )
            return NOTHING
        if last is None or self._lost or state.time - last.time <= self.lost_after_s:
            return NOTHING
        self._lost = True
        return StageOutput(
            records=(
                Alert(
                    time=last.time + self.lost_after_s,
                    code="gps_lost",
                    message=f"no fix for {self.lost_after_s:g} s",
                    attrs={
                        "last_fix": iso_time(last.time),
                        "lat": f"{last.lat:.7f}",
                        "lon": f"{last.lon:.7f}",
                    },
                ),
            )
        )
