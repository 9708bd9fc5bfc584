"""The one protocol every core stage implements, and what stages share.

A stage is a pure object: it sees each event once, in event-time order, with the vehicle state
as the stages before it left it, and answers with records to commit and effects for the shell.
It reads time only from events, keeps no clock, thread or socket, and must not raise for any
event (bad values are the drivers' business; a stage ignores what it has no rule for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agent.events import CoreEvent
from protocols.records import Fix, Record, Scan


@dataclass
class VehicleState:
    """What the van knows of itself as of ``time``: the latest event time seen (never earlier
    than an event already handled, so a late event cannot move the clock back)."""

    time: float = 0.0
    fix: Fix | None = None
    soc_percent: float | None = None
    speed_kmh: float | None = None
    ignition: float | None = None
    last_scan: Scan | None = None


@dataclass(frozen=True, slots=True)
class Effect:
    """Work for the shell that must not run on the event thread (resequencing a route within
    ``budget_s``). The shell runs ``name`` with ``args`` and feeds the answer back as an
    :class:`agent.events.EffectResult`; ``time`` is the event time of the request."""

    time: float
    name: str
    args: dict[str, str] = field(default_factory=dict)
    budget_s: float = 1.0


@dataclass(frozen=True, slots=True)
class StageOutput:
    """A stage's answer to one event: records in commit order, and effects."""

    records: tuple[Record, ...] = ()
    effects: tuple[Effect, ...] = ()


NOTHING = StageOutput()


class Stage(Protocol):
    """One step of the core.

    Called by :class:`agent.core.Core` only, on one thread, once per event, in event-time order
    (late events keep their own time; ``state.time`` is already the maximum). ``state`` is shared:
    a stage may update what it owns and read the rest. Returns :data:`NOTHING` when it has no
    answer; never raises.
    """

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput: ...
