"""Events only the agent's own shell produces: they never travel on the wire, so they live here and
not in ``protocols/records.py``. The core turns each into a record (an ``Alert``) when it arrives,
which is what makes them reproducible: a replay reads the recorded record back as the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.records import Event


@dataclass(frozen=True, slots=True)
class Document:
    """A downlink document (``configuration``, ``manifest``) as received, at ``time`` (event time).
    ``body`` is the document's bytes, unchecked: stages that apply documents check them."""

    time: float
    kind: str
    body: bytes


@dataclass(frozen=True, slots=True)
class EffectResult:
    """What the shell's worker returned for an :class:`agent.stages.base.Effect`, fed back at
    ``time`` (event time of its arrival, or as recorded when replayed)."""

    time: float
    effect: str
    result: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriverRestarted:
    """A driver's read loop died of an unexpected error and the shell restarted it."""

    time: float
    driver: str
    error: str
    restarts: int


@dataclass(frozen=True, slots=True)
class Quarantined:
    """The collector kept seqs ``first``..``last`` aside instead of storing them (``reason``: an
    absurd time, a body that did not decode...): the van says so in an alert of its own."""

    time: float
    first: int
    last: int
    reason: str


CoreEvent = Event | Document | EffectResult | DriverRestarted | Quarantined
"""Everything the core accepts: readings and ticks from ``protocols``, shell events from here."""
