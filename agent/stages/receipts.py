"""Shell events become records, so that a replay reproduces them from what was committed:
a downlink document received, an effect's result, a driver restarted, records the collector
quarantined."""

from __future__ import annotations

import hashlib

from agent.events import CoreEvent, Document, DriverRestarted, EffectResult, Quarantined
from agent.stages.base import NOTHING, StageOutput, VehicleState
from protocols.records import Alert

EFFECT_RESULT = "effect_result"
"""Alert code of a recorded effect result; ``attrs`` holds ``effect`` and the result's fields."""


class Receipts:
    """One ``info`` (``driver_restarted``, ``records_quarantined``: ``warning``) alert per shell event."""

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        if isinstance(event, Document):
            alert = Alert(
                time=event.time,
                code="document_received",
                severity="info",
                message=f"{event.kind} document received",
                attrs={
                    "kind": event.kind,
                    "bytes": str(len(event.body)),
                    "sha256": hashlib.sha256(event.body).hexdigest(),
                },
            )
        elif isinstance(event, EffectResult):
            alert = Alert(
                time=event.time,
                code=EFFECT_RESULT,
                severity="info",
                message=f"{event.effect} done",
                attrs={**event.result, "effect": event.effect},
            )
        elif isinstance(event, DriverRestarted):
            alert = Alert(
                time=event.time,
                code="driver_restarted",
                message=f"{event.driver} restarted after: {event.error}",
                attrs={"driver": event.driver, "restarts": str(event.restarts)},
            )
        elif isinstance(event, Quarantined):
            alert = Alert(
                time=event.time,
                code="records_quarantined",
                message=f"the collector kept seq {event.first}..{event.last} aside: {event.reason}",
                attrs={"from_seq": str(event.first), "to_seq": str(event.last), "reason": event.reason},
            )
        else:
            return NOTHING
        return StageOutput(records=(alert,))
