"""The wire: generated code matches the schema, batches round-trip, topics stay in their lane."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import convert, topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.generate import PROTO_DIR, ROOT, generate
from protocols.records import Alert, Fix, Gap, Scan, Signal


def test_generated_code_is_what_the_pinned_tools_make_of_the_proto() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        made = generate(Path(tmp))
        assert made
        for path in made:
            committed = ROOT / PROTO_DIR / path.name
            assert committed.read_bytes() == path.read_bytes(), (
                f"{committed} is stale: python -m protocols.generate"
            )


finite = st.floats(allow_nan=False, allow_infinity=False)
times = st.floats(min_value=946_684_800, max_value=4_102_444_800)
records = st.one_of(
    st.builds(
        Fix,
        time=times,
        mode=st.sampled_from([2, 3]),
        lat=st.floats(-90, 90),
        lon=st.floats(-180, 180),
        alt_msl=st.none() | st.floats(-500, 9000),
        speed=st.none() | st.floats(0, 100),
        track=st.none() | st.floats(0, 359.99),
        hdop=st.none() | st.floats(0, 99),
        sats=st.none() | st.integers(0, 64),
    ),
    st.builds(Signal, time=times, name=st.text(min_size=1, max_size=40), value=finite),
    st.builds(
        Scan,
        time=times,
        raw=st.text(max_size=60),
        kind=st.sampled_from(["sscc", "gtin", "unknown"]),
        fields=st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3),
    ),
    st.builds(Alert, time=times, code=st.text(max_size=20), message=st.text(max_size=40)),
    st.builds(
        Gap,
        time=times,
        from_seq=st.integers(1, 1000),
        to_seq=st.integers(1000, 2000),
        reason=st.just("disk_budget"),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=40), st.booleans(), st.integers(1, 2**40))
def test_batches_round_trip(batch: list[object], compress: bool, batch_id: int) -> None:
    blobs = [convert.encode(i + 1, r) for i, r in enumerate(batch)]  # type: ignore[arg-type]
    data = wire.encode_batch("van-1", batch_id, blobs, compress)
    decoded = wire.decode_batch(data, max_bytes=1 << 22, max_records=1000)
    assert decoded.vehicle == "van-1" and decoded.batch_id == batch_id
    assert list(decoded.records) == [pb.Record.FromString(b) for b in blobs]  # map order may differ
    for record, original in zip(decoded.records, batch, strict=True):
        row = convert.to_json(record)
        if isinstance(original, Fix):
            assert abs(row["lat"] - original.lat) <= 0.6e-7 and abs(row["lon"] - original.lon) <= 0.6e-7


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_are_a_wire_error_or_a_batch(data: bytes) -> None:
    try:
        batch = wire.decode_batch(data, max_bytes=500, max_records=50)
    except wire.WireError as exc:
        assert str(exc)
    else:
        assert isinstance(batch, pb.Batch) and len(batch.records) <= 50


def test_a_zip_bomb_is_refused() -> None:
    blob = convert.encode(1, Signal(1.7e9, "x" * 1000, 1.0))
    data = wire.encode_batch("van-1", 1, [blob] * 5000, compress=True)
    assert len(data) < 100_000
    try:
        wire.decode_batch(data, max_bytes=1 << 20, max_records=10_000)
    except wire.WireError as exc:
        assert str(exc) == "oversized"
    else:
        raise AssertionError("inflated past max_bytes")


@given(st.text(max_size=80))
def test_topics_never_let_a_vehicle_escape_its_lane(vehicle: str) -> None:
    if topics.valid_vehicle(vehicle):
        name = topics.topic(vehicle, topics.TELEMETRY)
        assert topics.parse(name) == (vehicle, topics.TELEMETRY)
        assert not any(c in vehicle for c in "/+#")
    else:
        try:
            topics.topic(vehicle, topics.TELEMETRY)
        except ValueError:
            return
        raise AssertionError(f"{vehicle!r} accepted")
