"""The compactor: decides which readings are committed to the outbox.

It wraps the stage that turns readings into records (``VehicleStage``) so the state every later
stage reads still sees every fix and signal; only what is committed is thinned:

* fixes go through ``protocols.track_codec.TrackSimplifier``: a fix is committed only if the
  committed fixes cannot reconstruct it within ``max_error_m`` (time-synchronised distance), at
  most ``max_hold_s`` of event time after it arrived (other events, ticks included, advance that
  clock), and at once when the collector's dead reckoning would miss it by ``live_error_m``;
* signals named in ``deadbands`` are reported by exception: committed when the value moved more
  than the deadband from the last committed value, or ``heartbeat_s`` after it.

What a caller may assume: every dropped fix is within the bound of the committed track, every
committed fix is moved by less than the bound (put on the codec's grid), and records other than
fixes and listed signals pass unchanged and in order. The undecided fix is lost with the process
(at most ``max_hold_s`` of track), like telemetry not yet group-committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.events import CoreEvent
from agent.stages.base import Stage, StageOutput, VehicleState
from protocols.records import Fix, Record, Signal
from protocols.track_codec import TrackSimplifier


@dataclass(frozen=True, slots=True)
class Deadband:
    """Report a signal when it moved more than ``deadband`` (0: any change) from the value last
    committed, or when ``heartbeat_s`` passed since that commit."""

    deadband: float
    heartbeat_s: float


class SignalDeadbands:
    """Report by exception per signal name; names without a deadband pass unchanged."""

    def __init__(self, deadbands: Mapping[str, Deadband]) -> None:
        self.deadbands = dict(deadbands)
        self._last: dict[str, Signal] = {}

    def keep(self, signal: Signal) -> bool:
        rule = self.deadbands.get(signal.name)
        if rule is None:
            return True
        last = self._last.get(signal.name)
        if (
            last is None
            or abs(signal.value - last.value) > rule.deadband
            or (rule.deadband == 0 and signal.value != last.value)
            or signal.time - last.time >= rule.heartbeat_s
            or signal.time < last.time
            or signal.value != signal.value  # NaN: let the collector judge it
        ):
            self._last[signal.name] = signal
            return True
        return False


class Compactor:
    """Runs ``inner`` and commits only the fixes and signals that carry information."""

    def __init__(
        self,
        inner: Stage,
        max_error_m: float = 0.0,
        max_hold_s: float = 60.0,
        live_error_m: float = 0.0,
        deadbands: Mapping[str, Deadband] | None = None,
    ) -> None:
        self.inner = inner
        self.track = TrackSimplifier(max_error_m, max_hold_s, live_error_m)
        self.signals = SignalDeadbands({} if deadbands is None else deadbands)

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        out = self.inner.handle(event, state)
        records: list[Record] = []
        if not isinstance(event, Fix):
            records += self.track.tick(state.time)
        for record in out.records:
            if isinstance(record, Fix):
                records += self.track.push(record)
            elif not isinstance(record, Signal) or self.signals.keep(record):
                records.append(record)
        return StageOutput(tuple(records), out.effects)
