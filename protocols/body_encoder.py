"""Record body messages to protobuf wire bytes by hand, so the van can encode without google.protobuf.

The van only ever *encodes* bodies (the outbox stores them, the uplink frames them with
:mod:`protocols.wire`); the collector decodes them with protobuf. The bytes are protobuf's own
deterministic serialization of ``dropline.v1`` (fields in number order, proto3 scalars left out
at zero, ``optional`` fields written when set, ``repeated int64`` packed, map entries sorted by key
with both key and value written, in
upb's order: see ``_upb_order``): ``tests/test_body_encoder.py`` proves it against protobuf's
encoder and checks :data:`SCHEMA` against the generated descriptor.

Values out of a field's range raise ``ValueError``, as protobuf does; strings that are not valid
Unicode raise ``UnicodeEncodeError`` (a ``ValueError``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

# (field name, field number, type); the types are the .proto's, "map" is map<string, string>.
SCHEMA: dict[str, tuple[tuple[str, int, str], ...]] = {
    "fix": (
        ("time_ms", 1, "int64"),
        ("mode", 2, "uint32"),
        ("lat_e7", 3, "sint32"),
        ("lon_e7", 4, "sint32"),
        ("alt_msl_cm", 5, "sint32"),
        ("speed_cms", 6, "uint32"),
        ("track_cdeg", 7, "uint32"),
        ("hdop_c", 8, "uint32"),
        ("sats", 9, "uint32"),
    ),
    "signal": (("time_ms", 1, "int64"), ("name", 2, "string"), ("value", 3, "double")),
    "scan": (
        ("time_ms", 1, "int64"),
        ("raw", 2, "string"),
        ("kind", 3, "string"),
        ("fields", 4, "map"),
        ("symbology", 5, "string"),
    ),
    "alert": (
        ("time_ms", 1, "int64"),
        ("code", 2, "string"),
        ("severity", 3, "string"),
        ("message", 4, "string"),
        ("attrs", 5, "map"),
    ),
    "gap": (("from_seq", 1, "uint64"), ("to_seq", 2, "uint64"), ("reason", 3, "string")),
    "fence_event": (
        ("time_ms", 1, "int64"),
        ("fence", 2, "string"),
        ("event", 3, "string"),
        ("lat_e7", 4, "sint32"),
        ("lon_e7", 5, "sint32"),
    ),
    "stop_update": (
        ("time_ms", 1, "int64"),
        ("manifest", 2, "string"),
        ("stop", 3, "string"),
        ("status", 4, "string"),
    ),
    "delivery": (
        ("time_ms", 1, "int64"),
        ("manifest", 2, "string"),
        ("stop", 3, "string"),
        ("parcel", 4, "string"),
        ("raw", 5, "string"),
        ("lat_e7", 6, "sint32"),
        ("lon_e7", 7, "sint32"),
        ("mode", 8, "uint32"),
        ("hdop_c", 9, "uint32"),
    ),
    "eta": (
        ("time_ms", 1, "int64"),
        ("manifest", 2, "string"),
        ("stops", 3, "repeated string"),
        ("eta_ms", 4, "repeated int64"),
    ),
    "blob_chunk": (
        ("time_ms", 1, "int64"),
        ("blob", 2, "string"),
        ("index", 3, "uint32"),
        ("count", 4, "uint32"),
        ("sha256", 5, "string"),
        ("media_type", 6, "string"),
        ("delivery", 7, "string"),
        ("data", 8, "bytes"),
    ),
    "document_status": (
        ("time_ms", 1, "int64"),
        ("document", 2, "string"),
        ("version", 3, "uint64"),
        ("applied", 4, "bool"),
        ("reason", 5, "string"),
    ),
}

_U32 = 1 << 32
_U64 = 1 << 64
_I32 = 1 << 31
_I64 = 1 << 63
_DOUBLE = struct.Struct("<d")


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer below 2**64 (negative int64s come in as 2**64 + n)."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _check(name: str, value: int, low: int, high: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{name}: {value!r} is not an integer")
    if not low <= value < high:
        raise ValueError(f"{name}: value out of range: {value}")
    return value


def _int64(name: str, v: int) -> bytes:
    return varint(_check(name, v, -_I64, _I64) % _U64)


def _uint32(name: str, v: int) -> bytes:
    return varint(_check(name, v, 0, _U32))


def _uint64(name: str, v: int) -> bytes:
    return varint(_check(name, v, 0, _U64))


def _sint32(name: str, v: int) -> bytes:
    v = _check(name, v, -_I32, _I32)
    return varint((v << 1) ^ (v >> 31))


def _delimited(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


_VARINTS: dict[str, Callable[[str, int], bytes]] = {
    "int64": _int64,
    "uint32": _uint32,
    "uint64": _uint64,
    "sint32": _sint32,
}

# Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited.
_WIRE_TYPE = {"double": 1, "string": 2, "bytes": 2, "map": 2, "repeated string": 2, "repeated int64": 2}


def _field(name: str, number: int, kind: str, value: Any) -> bytes:
    """One field's bytes; empty where protobuf writes nothing (an unset or zero proto3 scalar)."""
    tag = varint(number << 3 | _WIRE_TYPE.get(kind, 0))
    if kind in _VARINTS:
        return tag + _VARINTS[kind](name, value)
    if kind == "string":
        return _delimited(tag, value.encode()) if value else b""
    if kind == "double":
        packed = _DOUBLE.pack(value)
        return tag + packed if packed != bytes(8) else b""  # -0.0 is not zero to protobuf
    if kind == "bool":
        return tag + b"\x01" if value else b""
    if kind == "bytes":
        return _delimited(tag, bytes(value)) if value else b""
    if kind == "repeated string":
        return b"".join(_delimited(tag, item.encode()) for item in value)
    if kind == "repeated int64":
        packed = b"".join(_int64(name, item) for item in value)
        return _delimited(tag, packed) if packed else b""
    assert kind == "map", kind
    entries = sorted(((k.encode(), v.encode()) for k, v in value.items()), key=_upb_order)
    return b"".join(_delimited(tag, _delimited(b"\x0a", k) + _delimited(b"\x12", v)) for k, v in entries)


def _upb_order(entry: tuple[bytes, bytes]) -> bytes:
    """protobuf's (upb's) deterministic map order: keys by UTF-8 bytes, except that a key comes
    after the longer keys it is a prefix of (``"ab"`` before ``"a"``). UTF-8 has no 0xFF byte, so
    the sentinel sorts after any continuation."""
    return entry[0] + b"\xff"


# Fields of explicit presence ("optional" in the .proto): written when set, even at zero.
OPTIONAL = {"fix": ("alt_msl_cm", "speed_cms", "track_cdeg", "hdop_c", "sats"), "delivery": ("hdop_c",)}


def encode(kind: str, values: Mapping[str, Any]) -> bytes:
    """The body message ``kind`` (a ``Record.body`` name) with ``values`` by field name.

    A field missing from ``values`` or ``None`` is unset; proto3 fields without presence equal to
    zero are left out, as protobuf leaves them out."""
    optional = OPTIONAL.get(kind, ())
    out = []
    for name, number, field_kind in SCHEMA[kind]:
        value = values.get(name)
        if value is None:
            continue
        if field_kind in _VARINTS and value == 0 and name not in optional:
            _check(name, value, 0, 1)  # a zero still has to be an integer
            continue
        out.append(_field(name, number, field_kind, value))
    return b"".join(out)
