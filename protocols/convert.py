"""Typed records <-> protobuf messages <-> the JSON objects the CLI prints.

The van's path (``encode_body``) never imports the protobuf runtime: the body is encoded by
:mod:`protocols.body_encoder`; the functions that build or read messages import it on first use.

Units on the wire are fixed integers (1e-7 degrees, cm, cm/s, 1/100 degree); the round trip
through the wire is exact to those units, which are finer than any GNSS receiver's accuracy.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from protocols import body_encoder
from protocols.records import (
    Alert,
    BlobChunk,
    Delivery,
    DocumentStatus,
    Eta,
    FenceEvent,
    Fix,
    Gap,
    Record,
    Scan,
    Signal,
    StopUpdate,
    iso_time,
)


def _ms(t: float) -> int:
    return round(t * 1000)


def _opt(value: float | None, scale: float) -> int | None:
    return None if value is None else round(value * scale)


if TYPE_CHECKING:
    from protocols.dropline.v1 import dropline_pb2 as pb

    BodyMessage = (
        pb.Fix
        | pb.Signal
        | pb.Scan
        | pb.Alert
        | pb.Gap
        | pb.FenceEvent
        | pb.StopUpdate
        | pb.Delivery
        | pb.Eta
        | pb.BlobChunk
        | pb.DocumentStatus
    )

# Record body name -> the generated message's name.
_MESSAGES = {
    "fix": "Fix",
    "signal": "Signal",
    "scan": "Scan",
    "alert": "Alert",
    "gap": "Gap",
    "fence_event": "FenceEvent",
    "stop_update": "StopUpdate",
    "delivery": "Delivery",
    "eta": "Eta",
    "blob_chunk": "BlobChunk",
    "document_status": "DocumentStatus",
}


def body_values(record: Record) -> tuple[str, dict[str, Any]]:
    """The kind (the ``Record.body`` field name) and the body's field values in wire units; a
    ``None`` value is an unset ``optional`` field. Both encoders start from this one conversion."""
    if isinstance(record, Fix):
        return "fix", {
            "time_ms": _ms(record.time),
            "mode": record.mode,
            "lat_e7": round(record.lat * 1e7),
            "lon_e7": round(record.lon * 1e7),
            "alt_msl_cm": _opt(record.alt_msl, 100),
            "speed_cms": _opt(record.speed, 100),
            "track_cdeg": _opt(record.track, 100),
            "hdop_c": _opt(record.hdop, 100),
            "sats": record.sats,
        }
    if isinstance(record, Signal):
        return "signal", {"time_ms": _ms(record.time), "name": record.name, "value": record.value}
    if isinstance(record, Scan):
        return "scan", {
            "time_ms": _ms(record.time),
            "raw": record.raw,
            "kind": record.kind,
            "fields": record.fields,
            "symbology": record.symbology or "",
        }
    if isinstance(record, Alert):
        return "alert", {
            "time_ms": _ms(record.time),
            "code": record.code,
            "severity": record.severity,
            "message": record.message,
            "attrs": record.attrs,
        }
    if isinstance(record, Gap):
        return "gap", {"from_seq": record.from_seq, "to_seq": record.to_seq, "reason": record.reason}
    return _later_values(record)


def _e7(degrees: float) -> int:
    return round(degrees * 1e7)


def _later_values(record: Record) -> tuple[str, dict[str, Any]]:
    """The record kinds of the route, proof of delivery and documents."""
    t = _ms(record.time)
    if isinstance(record, FenceEvent):
        return "fence_event", {
            "time_ms": t,
            "fence": record.fence,
            "event": record.event,
            "lat_e7": _e7(record.lat),
            "lon_e7": _e7(record.lon),
        }
    if isinstance(record, StopUpdate):
        return "stop_update", {
            "time_ms": t,
            "manifest": record.manifest,
            "stop": record.stop,
            "status": record.status,
        }
    if isinstance(record, Delivery):
        return "delivery", {
            "time_ms": t,
            "manifest": record.manifest,
            "stop": record.stop,
            "parcel": record.parcel,
            "raw": record.raw,
            "lat_e7": _e7(record.lat),
            "lon_e7": _e7(record.lon),
            "mode": record.mode,
            "hdop_c": _opt(record.hdop, 100),
        }
    if isinstance(record, Eta):
        return "eta", {
            "time_ms": t,
            "manifest": record.manifest,
            "stops": record.stops,
            "eta_ms": [_ms(e) for e in record.etas],
        }
    if isinstance(record, BlobChunk):
        return "blob_chunk", {
            "time_ms": t,
            "blob": record.blob,
            "index": record.index,
            "count": record.count,
            "sha256": record.sha256,
            "media_type": record.media_type,
            "delivery": record.delivery,
            "data": record.data,
        }
    assert isinstance(record, DocumentStatus)
    return "document_status", {
        "time_ms": t,
        "document": record.document,
        "version": record.version,
        "applied": record.applied,
        "reason": record.reason,
    }


def to_body(record: Record) -> tuple[str, BodyMessage]:
    """The wire body of one record as a protobuf message, and its kind."""
    from protocols.dropline.v1 import dropline_pb2 as pb

    kind, values = body_values(record)
    message: BodyMessage = getattr(pb, _MESSAGES[kind])(**values)
    return kind, message


def encode_body(record: Record) -> tuple[str, bytes]:
    """The kind and encoded body the outbox stores: no seq inside, so renumbering is free.
    Encoded by :mod:`protocols.body_encoder` (no protobuf runtime): protobuf's deterministic bytes."""
    kind, values = body_values(record)
    return kind, body_encoder.encode(kind, values)


def to_pb(seq: int, record: Record) -> pb.Record:
    """The wire form of one record with its sequence number."""
    from protocols.dropline.v1 import dropline_pb2 as pb

    kind, body = to_body(record)
    message = pb.Record(seq=seq)
    getattr(message, kind).CopyFrom(body)
    return message


def from_body(seq: int, kind: str, body: bytes) -> pb.Record:
    """The wire record of a stored body (as the outbox keeps it); DecodeError if it is not one."""
    from protocols.dropline.v1 import dropline_pb2 as pb

    message = pb.Record(seq=seq)
    getattr(message, kind).ParseFromString(body)
    return message


def encode(seq: int, record: Record) -> bytes:
    return bytes(to_pb(seq, record).SerializeToString())


KINDS = {
    "fix": "fixes",
    "signal": "signals",
    "scan": "scans",
    "alert": "alerts",
    "gap": "gaps",
    "fence_event": "fence_events",
    "stop_update": "stops",
    "delivery": "deliveries",
    "eta": "etas",
    "blob_chunk": "blobs",
    "document_status": "documents",
}
"""Record body name -> the ``--kind`` name ``dropline export`` uses for it."""


def kind_of(record: pb.Record) -> str:
    """The body name (``fix``, ``signal``...) or ``unknown`` for a kind this build does not know."""
    return record.WhichOneof("body") or "unknown"


def to_json(record: pb.Record) -> dict[str, Any]:
    """The export form: ``seq`` plus the body's fields in the units of ``dropline decode``.
    Maps (a scan's ``fields``, an alert's ``attrs``) come in key order: protobuf iterates them
    in an order that changes from process to process, and replays must be byte-identical."""
    body = kind_of(record)
    out: dict[str, Any] = {"seq": record.seq, "kind": body}
    if body == "fix":
        f = record.fix
        out.update(time=iso_time(f.time_ms / 1000), mode=f.mode, lat=f.lat_e7 / 1e7, lon=f.lon_e7 / 1e7)
        for key, name, scale in (
            ("altMSL", "alt_msl_cm", 100),
            ("speed", "speed_cms", 100),
            ("track", "track_cdeg", 100),
            ("hdop", "hdop_c", 100),
            ("sats", "sats", 1),
        ):
            if f.HasField(name):  # type: ignore[arg-type]
                value = getattr(f, name)
                out[key] = value if scale == 1 else value / scale
    elif body == "signal":
        out.update(t=record.signal.time_ms / 1000, signal=record.signal.name, value=record.signal.value)
    elif body == "scan":
        s = record.scan
        out.update(
            time=iso_time(s.time_ms / 1000),
            raw=s.raw,
            scan_kind=s.kind,
            fields=dict(sorted(s.fields.items())),
        )
        if s.symbology:
            out["symbology"] = s.symbology
    elif body == "alert":
        a = record.alert
        out.update(
            time=iso_time(a.time_ms / 1000),
            code=a.code,
            severity=a.severity,
            message=a.message,
            attrs=dict(sorted(a.attrs.items())),
        )
    elif body == "gap":
        out.update(from_seq=record.gap.from_seq, to_seq=record.gap.to_seq, reason=record.gap.reason)
    elif body != "unknown":
        out.update(_fields_json(getattr(record, body)))
    return out


def _fields_json(message: BodyMessage) -> dict[str, Any]:
    """The later record kinds in export form, by field-naming convention, in field order:
    ``time_ms`` -> ``time`` (ISO 8601), ``*_e7`` -> degrees, ``hdop_c`` -> ``hdop``, ``eta_ms``
    -> ``etas`` (ISO 8601), bytes -> base64, repeated fields -> lists."""
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        name = fd.name
        value = getattr(message, name)
        if fd.has_presence and not message.HasField(name):  # type: ignore[arg-type]
            continue
        if name == "time_ms":
            out["time"] = iso_time(value / 1000)
        elif name == "eta_ms":
            out["etas"] = [iso_time(v / 1000) for v in value]
        elif name.endswith("_e7"):
            out[name.removesuffix("_e7")] = value / 1e7
        elif name == "hdop_c":
            out["hdop"] = value / 100
        elif isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode()
        elif fd.is_repeated:
            out[name] = list(value)
        else:
            out[name] = value
    return out
