"""The hand-written body encoder against protobuf's own encoder (the dev environment's protobuf).

Truth is ``google.protobuf``: the same field values given to the generated message must serialize
(deterministically: map entries in upb's key order) to exactly our bytes, and where protobuf refuses a
value (out of range, not Unicode) we refuse it too. The schema table is checked against the
generated descriptor, so a field added to the .proto without the encoder fails here.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import body_encoder, convert
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import Alert, Delivery, Eta, Fix, Scan, Signal

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = {f.name: f.message_type.name for f in pb.Record.DESCRIPTOR.oneofs_by_name["body"].fields}
TYPES = {
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def schema_of(kind: str) -> tuple[tuple[str, int, str], ...]:
    """The encoder's view of one body message, read from protobuf's descriptor."""
    out = []
    for fd in getattr(pb, MESSAGES[kind]).DESCRIPTOR.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key, value = fd.message_type.fields
            assert (key.type, value.type) == (FieldDescriptor.TYPE_STRING,) * 2
            out.append((fd.name, fd.number, "map"))
        else:
            name = TYPES[fd.type]
            out.append((fd.name, fd.number, f"repeated {name}" if fd.is_repeated else name))
    return tuple(sorted(out, key=lambda f: f[1]))


def test_schema_is_the_proto() -> None:
    assert set(body_encoder.SCHEMA) == set(MESSAGES)
    for kind in MESSAGES:
        assert body_encoder.SCHEMA[kind] == schema_of(kind), kind
        descriptor = getattr(pb, MESSAGES[kind]).DESCRIPTOR
        optional = {fd.name for fd in descriptor.fields if fd.has_presence and fd.message_type is None}
        assert set(body_encoder.OPTIONAL.get(kind, ())) == optional, kind


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    """Mostly in range, edges included, sometimes just out of it or far out."""
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([low, high, 0, -1, 1, low - 1, high + 1]),
        st.integers(-(1 << 70), 1 << 70),
    )


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.text(), st.just("a\ud800b"))  # a lone surrogate is not encodable


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int64": ints(-(1 << 63), (1 << 63) - 1),
    "uint32": ints(0, (1 << 32) - 1),
    "uint64": ints(0, (1 << 64) - 1),
    "sint32": ints(-(1 << 31), (1 << 31) - 1),
    "string": texts(),
    "double": st.floats(),
    "bool": st.booleans(),
    "bytes": st.binary(),
    "map": st.dictionaries(st.one_of(texts(), st.text("ab", max_size=3)), texts(), max_size=6),
    "repeated string": st.lists(texts(), max_size=5),
    "repeated int64": st.lists(ints(-(1 << 63), (1 << 63) - 1), max_size=5),
}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(MESSAGES)))
    values: dict[str, Any] = {}
    for name, _number, field_kind in body_encoder.SCHEMA[kind]:
        if draw(st.booleans()):  # absent (unset) half the time
            continue
        if name in body_encoder.OPTIONAL.get(kind, ()) and draw(st.booleans()):
            values[name] = None
        else:
            values[name] = draw(VALUES[field_kind])
    return kind, values


def protobuf_bytes(kind: str, values: dict[str, Any]) -> bytes | type[Exception]:
    try:
        message = getattr(pb, MESSAGES[kind])(**values)
        return bytes(message.SerializeToString(deterministic=True))
    except (ValueError, TypeError) as exc:
        return type(exc)


def ours(kind: str, values: dict[str, Any]) -> bytes | type[Exception]:
    try:
        return body_encoder.encode(kind, values)
    except (ValueError, TypeError) as exc:
        return type(exc)


@settings(max_examples=3000, deadline=None)
@given(bodies())
def test_same_bytes_as_protobuf(body: tuple[str, dict[str, Any]]) -> None:
    kind, values = body
    expected = protobuf_bytes(kind, values)
    got = ours(kind, values)
    if isinstance(expected, bytes):
        assert got == expected
    else:  # protobuf refused the values: so do we, as a ValueError (or a TypeError)
        assert isinstance(got, type) and issubclass(got, (ValueError, TypeError)), got


@pytest.mark.parametrize(
    ("kind", "values", "hand"),
    [
        # Hand-computed from the protobuf encoding rules, independent of both encoders.
        ("fix", {"time_ms": 1, "mode": 3, "lat_e7": -1, "lon_e7": 1}, b"\x08\x01\x10\x03\x18\x01\x20\x02"),
        ("fix", {"time_ms": -1, "sats": 0}, b"\x08" + b"\xff" * 9 + b"\x01" + b"\x48\x00"),
        ("signal", {"time_ms": 0, "name": "a", "value": -0.0}, b"\x12\x01a\x19" + bytes(7) + b"\x80"),
        ("eta", {"eta_ms": [1, 300]}, b"\x22\x03\x01\xac\x02"),
        ("scan", {"fields": {"b": "", "a": "x"}}, b"\x22\x06\x0a\x01a\x12\x01x\x22\x05\x0a\x01b\x12\x00"),
        ("document_status", {"applied": True, "version": 0}, b"\x20\x01"),
        # upb's deterministic order: a key after the longer keys it is a prefix of
        ("alert", {"attrs": {"a": "", "ab": ""}}, b"\x2a\x06\x0a\x02ab\x12\x00\x2a\x05\x0a\x01a\x12\x00"),
    ],
)
def test_hand_computed(kind: str, values: dict[str, Any], hand: bytes) -> None:
    assert body_encoder.encode(kind, values) == hand


coords = st.floats(-90, 90, allow_nan=False)
times = st.floats(0, 4e9, allow_nan=False)
opt = st.none() | st.floats(0, 1e4, allow_nan=False)
RECORDS = st.one_of(
    st.builds(
        Fix,
        times,
        st.sampled_from([2, 3]),
        coords,
        coords,
        opt,
        opt,
        opt,
        opt,
        st.none() | st.integers(0, 64),
    ),
    st.builds(Signal, times, st.text(), st.floats()),
    st.builds(
        Scan, times, st.text(), st.text(), st.dictionaries(st.text(), st.text()), st.none() | st.text()
    ),
    st.builds(Alert, times, st.text(), st.text(), st.text(), st.dictionaries(st.text(), st.text())),
    st.builds(
        Delivery, times, st.text(), st.text(), st.text(), st.text(), coords, coords, st.integers(0, 3), opt
    ),
    st.builds(Eta, times, st.text(), st.lists(st.text()).map(tuple), st.lists(times).map(tuple)),
)


@settings(max_examples=500, deadline=None)
@given(RECORDS)
def test_records_through_convert(record: Any) -> None:
    """What the outbox stores is protobuf's encoding of the record, and protobuf reads it back."""
    kind, body = convert.encode_body(record)
    _, message = convert.to_body(record)
    assert body == message.SerializeToString(deterministic=True)
    back = convert.from_body(7, kind, body)
    assert getattr(back, kind) == message
    if isinstance(record, Signal) and not math.isnan(record.value):
        assert back.signal.value == record.value


@pytest.mark.parametrize("module", ["agent.outbox", "protocols.convert", "protocols.body_encoder"])
def test_van_encoding_path_has_no_protobuf(module: str) -> None:
    """The outbox's encoding path must not load the protobuf runtime (3.9 MB on the van)."""
    code = f"import sys, {module}; sys.exit('google.protobuf' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
