"""The typed readings every driver produces and the core consumes.

Times are seconds since the Unix epoch (UTC) as the device reported them (GNSS time, CAN frame
timestamp, scanner line arrival), never the agent's wall clock read inside the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Fix:
    """One GNSS receiver epoch, merged from all the sentences (or gpsd reports) that describe it.

    Field names and units follow gpsd's TPV report: ``mode`` 2 = 2D, 3 = 3D; ``speed`` in m/s,
    ``track`` in degrees true, ``alt_msl`` in metres above mean sea level.
    """

    time: float
    mode: int
    lat: float
    lon: float
    alt_msl: float | None = None
    speed: float | None = None
    track: float | None = None
    hdop: float | None = None
    sats: int | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """One decoded vehicle signal: a COVESA VSS name where the vehicle's mapping knows it,
    ``<Message>.<Signal>`` otherwise."""

    time: float
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class Scan:
    """One barcode read. ``kind`` is ``sscc`` | ``gtin`` | ``gs1`` | ``tracking`` | ``unknown``;
    ``fields`` holds what was understood (``sscc``, ``gtin``, AI values, ``courier``...)."""

    time: float
    raw: str
    kind: str
    fields: dict[str, str] = field(default_factory=dict)
    symbology: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """The passage of time, injected by the shell so the core can run timers without a clock."""

    time: float


Event = Fix | Signal | Scan | Tick


def iso_time(t: float) -> str:
    """gpsd's time format: ISO 8601 UTC with milliseconds and a ``Z``."""
    ms = round(t * 1000)
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def parse_iso_time(text: str) -> float:
    """Inverse of :func:`iso_time`; accepts any ISO 8601 UTC time with ``Z`` or an offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
