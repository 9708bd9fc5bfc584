"""The typed readings every driver produces and the core consumes (Fix, Signal, Scan, Tick), and
the records the core commits and the wire carries (those, plus Alert, Gap, FenceEvent,
StopUpdate, Delivery, Eta, BlobChunk, DocumentStatus).

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


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person should look at: a delivery exception, or the agent's own trouble."""

    time: float
    code: str
    severity: str = "warning"
    message: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers given out but never to be sent: every seq in ``[from_seq, to_seq]`` the
    collector lacks was dropped on purpose (``disk_budget``, ``outbox_reset``)."""

    time: float
    from_seq: int
    to_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class FenceEvent:
    """A geofence transition the van's detector decided: ``enter``, ``exit`` or ``dwell``."""

    time: float
    fence: str
    event: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class StopUpdate:
    """A stop's progress: ``arrived``, ``serving``, ``departed``, ``skipped`` or ``completed``."""

    time: float
    manifest: str
    stop: str
    status: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """Proof of delivery: a manifest parcel scanned at its stop, with where the van was and how
    good that fix was (``mode`` 0 when no fix was known)."""

    time: float
    manifest: str
    stop: str
    parcel: str
    raw: str
    lat: float = 0.0
    lon: float = 0.0
    mode: int = 0
    hdop: float | None = None


@dataclass(frozen=True, slots=True)
class Eta:
    """Estimated arrival at each remaining stop, in visit order: ``etas[i]`` is ``stops[i]``'s."""

    time: float
    manifest: str
    stops: tuple[str, ...]
    etas: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class BlobChunk:
    """One chunk of a photo or signature proving ``delivery`` (``<stop>/<parcel>``); ``sha256``
    is the whole blob's, so the collector can check what it reassembles."""

    time: float
    blob: str
    index: int
    count: int
    sha256: str
    media_type: str
    delivery: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DocumentStatus:
    """What the van did with a fleet document: applied, or refused with the reason."""

    time: float
    document: str
    version: int
    applied: bool
    reason: str = ""


Event = Fix | Signal | Scan | Tick
"""What drivers and the shell feed the core."""

Record = (
    Fix | Signal | Scan | Alert | Gap | FenceEvent | StopUpdate | Delivery | Eta | BlobChunk | DocumentStatus
)
"""What the core (and the outbox itself, for gaps) hands to the outbox to persist and send."""

TELEMETRY = (Fix, Signal, Eta)
"""Record types that are telemetry: group-committed, and evicted oldest first when space runs out."""


def is_priority(record: Record) -> bool:
    """Scans, deliveries, alerts, gaps and the rest are committed at once and never evicted;
    telemetry is batched."""
    return not isinstance(record, TELEMETRY)


def iso_time(t: float) -> str:
    """gpsd's time format: ISO 8601 UTC with milliseconds and a ``Z``."""
    ms = round(t * 1000)
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def parse_iso_time(text: str) -> float:
    """Inverse of :func:`iso_time`; ISO 8601 with ``Z`` or an offset, UTC when it has neither
    (never the machine's local zone)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
