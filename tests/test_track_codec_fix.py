"""The van's protobuf-free reading of ``Fix`` bodies into track columns, against protobuf's parse.

Truth is ``google.protobuf``: a Fix protobuf serialises reads back to the columns protobuf's own
message gives; for any bytes at all, the reader either raises ``WireError`` or gives exactly the
values protobuf parses (it refuses more than protobuf: another wire type, an unknown field, a
value protobuf would truncate), and never accepts what protobuf refuses. Checked on the compiled
module the van runs and on the same source as plain Python.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols import track_codec
from protocols.convert import encode_body
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import WireError
from protocols.records import Fix
from protocols.wire import varint
from tests.mutations import mutated


def _plain() -> ModuleType:
    """``protocols/track_codec.py`` itself, not the extension that shadows it."""
    path = Path(track_codec.__file__).with_name("track_codec.py")
    spec = importlib.util.spec_from_file_location("track_codec_plain", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MODULES = {"compiled": track_codec, "plain": _plain()}

I32 = st.integers(-(2**31), 2**31 - 1)
U32 = st.integers(0, 2**32 - 1)


@st.composite
def fixes(draw: st.DrawFn) -> pb.Fix:
    fix = pb.Fix(
        time_ms=draw(st.integers(-(2**63), 2**63 - 1)),
        mode=draw(U32),
        lat_e7=draw(I32),
        lon_e7=draw(I32),
    )
    for name in track_codec.OPTIONAL:
        value = draw(st.none() | (I32 if name == "alt_msl_cm" else U32))
        if value is not None:
            setattr(fix, name, value)
    return fix


@pytest.mark.parametrize("build", sorted(MODULES))
@given(fix=fixes())
def test_a_fix_protobuf_serialises_reads_back_to_its_columns(build: str, fix: pb.Fix) -> None:
    codec = MODULES[build]
    assert codec.decode_fix(fix.SerializeToString()) == codec.columns_of([fix])


opt = st.none() | st.floats(0, 1e4).map(lambda v: round(v, 2))
records = st.builds(
    Fix,
    time=st.integers(-(2**40), 2**42).map(lambda ms: ms / 1000),
    mode=st.sampled_from([0, 2, 3]),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    alt_msl=st.none() | st.floats(-400, 9000).map(lambda v: round(v, 2)),
    speed=opt,
    track=opt,
    hdop=opt,
    sats=st.none() | st.integers(0, 64),
)


@given(st.lists(records, max_size=6))
def test_the_outbox_bodies_read_into_the_columns_of_their_fixes(fixes: list[Fix]) -> None:
    """The van's own bodies (the hand encoder's, byte-identical to protobuf's) all go in."""
    bodies = [encode_body(f)[1] for f in fixes]
    columns, odd = track_codec.fix_columns(bodies)
    assert odd == []
    assert columns == track_codec.columns_of([pb.Fix.FromString(b) for b in bodies])


def tag(number: int, wire_type: int = 0) -> bytes:
    return varint(number << 3 | wire_type)


@st.composite
def soups(draw: st.DrawFn) -> bytes:
    """Fields of Fix's numbers and beyond, varints of every size, now and then another wire type."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 10))):
        number = draw(st.integers(0, 12))
        wire_type = draw(st.sampled_from([0] * 8 + [1, 2, 3, 4, 5, 6, 7]))
        parts.append(tag(number, wire_type))
        if wire_type == 0:
            parts.append(varint(draw(st.integers(0, 2**32 + 2) | st.integers(0, 2**70))))
        elif wire_type == 2:
            payload = draw(st.binary(max_size=4))
            parts.append(varint(len(payload)) + payload)
        else:
            parts.append(draw(st.binary(max_size=8)))
    return b"".join(parts)


@pytest.mark.parametrize("build", sorted(MODULES))
@settings(max_examples=1000)
@given(body=mutated(fixes().map(lambda f: f.SerializeToString()) | soups() | st.binary(max_size=20)))
@example(body=b"\x08" + b"\xff" * 9 + b"\x01")  # time -1: ten bytes, two's complement
@example(body=b"\x88\x80\x80\x80\x80\x00\x05")  # a six-byte tag: protobuf refuses it
@example(body=b"\x88\x80\x80\x80\x00\x05")  # a five-byte tag of field 1: fine
@example(body=b"\x08\x05\x08\x07")  # the last value wins
@example(body=b"\x0c\x05")  # an end-group tag: protobuf refuses it
def test_any_bytes_read_as_protobuf_parses_them_or_raise_wire_error(build: str, body: bytes) -> None:
    codec = MODULES[build]
    try:
        expected = codec.columns_of([pb.Fix.FromString(body)])
    except Exception:  # upb's DecodeError
        expected = None
    try:
        got = codec.decode_fix(body)
    except WireError:
        return  # refusing is always allowed: the body then travels as it is
    assert expected is not None, f"protobuf refuses {body.hex()}"
    assert got == expected, body.hex()


@pytest.mark.parametrize("build", sorted(MODULES))
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x08", "fix_truncated"),
        (b"\x08\x80", "fix_truncated"),
        (b"\x88", "fix_truncated"),
        (b"\x08" + b"\x80" * 10 + b"\x01", "fix_bad_varint"),
        (b"\x88\x80\x80\x80\x80\x00\x05", "fix_bad_varint"),
        (b"\x08" + b"\xff" * 9 + b"\x02", "fix_out_of_range"),
        (tag(2) + varint(2**32), "fix_out_of_range"),
        (tag(3) + varint(2**32), "fix_out_of_range"),
        (tag(9) + varint(2**40), "fix_out_of_range"),
        (tag(3, 5) + b"\x00" * 4, "fix_wire_type"),
        (tag(1, 2) + b"\x00", "fix_wire_type"),
        (tag(10) + b"\x00", "fix_unknown_field"),
        (b"\x00\x00", "fix_unknown_field"),
    ],
)
def test_bodies_the_track_cannot_carry_exactly_say_why(build: str, body: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=f"^{reason}$"):
        MODULES[build].decode_fix(body)


@pytest.mark.parametrize("build", sorted(MODULES))
def test_fix_columns_keeps_the_good_bodies_in_order_and_names_the_others(build: str) -> None:
    good = [pb.Fix(time_ms=t, mode=3, lat_e7=t, lon_e7=-t, sats=t % 2) for t in range(5)]
    bodies = [f.SerializeToString() for f in good]
    bodies[1:1] = [b"\x08"]
    bodies[4:4] = [tag(3) + varint(2**33)]
    codec = MODULES[build]
    columns, odd = codec.fix_columns(bodies)
    assert odd == [1, 4]
    assert columns == codec.columns_of(good)
    assert codec.columns_reference(columns) == (4, 4, -4)
