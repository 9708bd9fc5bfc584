"""Typed records <-> protobuf messages <-> the JSON objects the CLI prints.

Units on the wire are fixed integers (1e-7 degrees, cm, cm/s, 1/100 degree); the round trip
through the wire is exact to those units, which are finer than any GNSS receiver's accuracy.
"""

from __future__ import annotations

from typing import Any

from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import Alert, Fix, Record, Scan, Signal, iso_time


def _ms(t: float) -> int:
    return round(t * 1000)


def _opt(value: float | None, scale: float) -> int | None:
    return None if value is None else round(value * scale)


BodyMessage = pb.Fix | pb.Signal | pb.Scan | pb.Alert | pb.Gap


def to_body(record: Record) -> tuple[str, BodyMessage]:
    """The wire body of one record and its kind (the ``Record.body`` field name)."""
    if isinstance(record, Fix):
        return "fix", pb.Fix(
            time_ms=_ms(record.time),
            mode=record.mode,
            lat_e7=round(record.lat * 1e7),
            lon_e7=round(record.lon * 1e7),
            alt_msl_cm=_opt(record.alt_msl, 100),
            speed_cms=_opt(record.speed, 100),
            track_cdeg=_opt(record.track, 100),
            hdop_c=_opt(record.hdop, 100),
            sats=record.sats,
        )
    if isinstance(record, Signal):
        return "signal", pb.Signal(time_ms=_ms(record.time), name=record.name, value=record.value)
    if isinstance(record, Scan):
        return "scan", pb.Scan(
            time_ms=_ms(record.time),
            raw=record.raw,
            kind=record.kind,
            fields=record.fields,
            symbology=record.symbology or "",
        )
    if isinstance(record, Alert):
        return "alert", pb.Alert(
            time_ms=_ms(record.time),
            code=record.code,
            severity=record.severity,
            message=record.message,
            attrs=record.attrs,
        )
    return "gap", pb.Gap(from_seq=record.from_seq, to_seq=record.to_seq, reason=record.reason)


def encode_body(record: Record) -> tuple[str, bytes]:
    """The kind and encoded body the outbox stores: no seq inside, so renumbering is free."""
    kind, body = to_body(record)
    return kind, bytes(body.SerializeToString())


def to_pb(seq: int, record: Record) -> pb.Record:
    """The wire form of one record with its sequence number."""
    kind, body = to_body(record)
    message = pb.Record(seq=seq)
    getattr(message, kind).CopyFrom(body)
    return message


def from_body(seq: int, kind: str, body: bytes) -> pb.Record:
    """The wire record of a stored body (as the outbox keeps it); DecodeError if it is not one."""
    message = pb.Record(seq=seq)
    getattr(message, kind).ParseFromString(body)
    return message


def encode(seq: int, record: Record) -> bytes:
    return bytes(to_pb(seq, record).SerializeToString())


KINDS = {"fix": "fixes", "signal": "signals", "scan": "scans", "alert": "alerts", "gap": "gaps"}
"""Record body name -> the ``--kind`` name ``dropline export`` uses for it."""


def kind_of(record: pb.Record) -> str:
    """The body name (``fix``, ``signal``...) or ``unknown`` for a kind this build does not know."""
    return record.WhichOneof("body") or "unknown"


def time_ms_of(record: pb.Record) -> int | None:
    body = kind_of(record)
    if body in ("fix", "signal", "scan", "alert"):
        return int(getattr(record, body).time_ms)
    return None


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
    return out
