"""The wire: generated code matches the schema, batches round-trip, topics stay in their lane."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import convert, topics, wire
from protocols.errors import WireError
from protocols.generate import PROTO_DIR, ROOT, generate
from protocols.records import (
    Alert,
    BlobChunk,
    Delivery,
    DocumentStatus,
    Eta,
    FenceEvent,
    Fix,
    Gap,
    Scan,
    Signal,
    StopUpdate,
    parse_iso_time,
)


def test_the_wire_constants_are_the_schemas() -> None:
    """``protocols.wire`` writes them out so the van's encoding needs no protobuf runtime."""
    from protocols.dropline.v1 import dropline_pb2 as pb

    assert {f.name for f in pb.Record.DESCRIPTOR.oneofs_by_name["body"].fields} == wire.BODY_KINDS
    assert (wire.CODEC_MESSAGES, wire.CODEC_TRACK_V1) == (pb.CODEC_MESSAGES, pb.CODEC_TRACK_V1)
    assert (wire.COMPRESSION_NONE, wire.COMPRESSION_ZLIB) == (pb.COMPRESSION_NONE, pb.COMPRESSION_ZLIB)
    assert {v.name: v.number for v in pb.Codec.DESCRIPTOR.values} == {
        "CODEC_MESSAGES": wire.CODEC_MESSAGES,
        "CODEC_TRACK_V1": wire.CODEC_TRACK_V1,
    }
    assert {v.name: v.number for v in pb.Compression.DESCRIPTOR.values} == {
        "COMPRESSION_NONE": wire.COMPRESSION_NONE,
        "COMPRESSION_ZLIB": wire.COMPRESSION_ZLIB,
    }


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
ids = st.text(min_size=1, max_size=20)
T0 = 1_700_000_000.0
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
    st.builds(
        FenceEvent,
        time=times,
        fence=ids,
        event=st.sampled_from(["enter", "exit", "dwell"]),
        lat=st.floats(-90, 90),
        lon=st.floats(-180, 180),
    ),
    st.builds(
        StopUpdate, time=times, manifest=ids, stop=ids, status=st.sampled_from(["arrived", "departed"])
    ),
    st.builds(
        Delivery,
        time=times,
        manifest=ids,
        stop=ids,
        parcel=ids,
        raw=st.text(max_size=40),
        lat=st.floats(-90, 90),
        lon=st.floats(-180, 180),
        mode=st.sampled_from([0, 2, 3]),
        hdop=st.none() | st.floats(0, 99),
    ),
    st.lists(st.tuples(ids, times), max_size=5).map(
        lambda pairs: Eta(T0, "m-1", tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    ),
    st.builds(
        BlobChunk,
        time=times,
        blob=ids,
        index=st.integers(0, 99),
        count=st.integers(1, 100),
        sha256=st.just("ab" * 32),
        media_type=st.just("image/jpeg"),
        delivery=ids,
        data=st.binary(max_size=100),
    ),
    st.builds(
        DocumentStatus,
        time=times,
        document=st.sampled_from(["config", "manifest"]),
        version=st.integers(0, 2**40),
        applied=st.booleans(),
        reason=st.text(max_size=30),
    ),
)


def _matches(row: dict[str, object], original: object) -> None:
    """The export form of a decoded record against the record that went in, field by field."""

    def near(a: object, b: float | None, tol: float) -> bool:
        return (a is None and b is None) or (
            isinstance(a, int | float) and b is not None and abs(a - b) <= tol
        )

    if isinstance(original, Fix):
        assert row["kind"] == "fix" and row["mode"] == original.mode
        assert near(row["lat"], original.lat, 0.6e-7) and near(row["lon"], original.lon, 0.6e-7)
        assert near(parse_iso_time(str(row["time"])), original.time, 0.0006)
        for key, value in (
            ("altMSL", original.alt_msl),
            ("speed", original.speed),
            ("track", original.track),
        ):
            assert near(row.get(key), value, 0.006), key
        assert near(row.get("hdop"), original.hdop, 0.006) and row.get("sats") == original.sats
    elif isinstance(original, Signal):
        assert (row["kind"], row["signal"], row["value"]) == ("signal", original.name, original.value)
        assert near(row["t"], original.time, 0.0006)
    elif isinstance(original, Scan):
        assert (row["kind"], row["raw"], row["scan_kind"]) == ("scan", original.raw, original.kind)
        assert row["fields"] == original.fields
    elif isinstance(original, Alert):
        assert (row["kind"], row["code"], row["message"]) == ("alert", original.code, original.message)
        assert row["severity"] == original.severity
    elif isinstance(original, Gap):
        assert (row["kind"], row["from_seq"], row["to_seq"]) == ("gap", original.from_seq, original.to_seq)
    elif isinstance(original, FenceEvent):
        assert (row["kind"], row["fence"], row["event"]) == ("fence_event", original.fence, original.event)
        assert near(row["lat"], original.lat, 0.6e-7) and near(row["lon"], original.lon, 0.6e-7)
    elif isinstance(original, StopUpdate):
        assert (row["kind"], row["stop"], row["status"]) == ("stop_update", original.stop, original.status)
    elif isinstance(original, Delivery):
        assert (row["kind"], row["stop"], row["parcel"], row["raw"]) == (
            "delivery",
            original.stop,
            original.parcel,
            original.raw,
        )
        assert row["mode"] == original.mode and near(row.get("hdop"), original.hdop, 0.006)
        assert near(row["lat"], original.lat, 0.6e-7) and near(row["lon"], original.lon, 0.6e-7)
    elif isinstance(original, Eta):
        assert row["kind"] == "eta" and row.get("stops", []) == list(original.stops)
        etas = [parse_iso_time(t) for t in cast(list[str], row.get("etas", []))]
        assert len(etas) == len(original.etas)
        assert all(near(a, b, 0.0006) for a, b in zip(etas, original.etas, strict=True))
    elif isinstance(original, BlobChunk):
        assert (row["kind"], row["blob"], row.get("index", 0), row["count"]) == (
            "blob_chunk",
            original.blob,
            original.index,
            original.count,
        )
        assert base64.b64decode(str(row.get("data", ""))) == original.data
    else:
        assert isinstance(original, DocumentStatus)
        assert (row["kind"], row["document"]) == ("document_status", original.document)
        assert row.get("version", 0) == original.version
        assert row.get("applied", False) == original.applied and row.get("reason", "") == original.reason


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=40), st.booleans(), st.integers(1, 2**40))
def test_whole_record_batches_round_trip(batch: list[object], compress: bool, batch_id: int) -> None:
    blobs = [convert.encode(i + 1, r) for i, r in enumerate(batch)]  # type: ignore[arg-type]
    data = wire.encode_batch("van-1", batch_id, blobs, compress)
    decoded = wire.decode_batch(data, max_bytes=1 << 22, max_records=1000)
    assert decoded.vehicle == "van-1" and decoded.batch_id == batch_id and decoded.unreadable == []
    assert [r.seq for r in decoded.records] == list(range(1, len(batch) + 1))
    for record, original in zip(decoded.records, batch, strict=True):
        _matches(convert.to_json(record), original)


def _segments(batch: list[object], first_seq: int) -> list[wire.Segment]:
    by_kind: dict[str, tuple[list[int], list[bytes]]] = {}
    for seq, record in enumerate(batch, start=first_seq):
        kind, body = convert.encode_body(record)  # type: ignore[arg-type]
        seqs, bodies = by_kind.setdefault(kind, ([], []))
        seqs.append(seq)
        bodies.append(body)
    return [wire.Segment(kind, seqs, bodies) for kind, (seqs, bodies) in by_kind.items()]


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=40), st.booleans(), st.integers(1, 2**40), st.integers(1, 2**62))
def test_segment_batches_round_trip(batch: list[object], compress: bool, batch_id: int, first: int) -> None:
    data = wire.encode_batch("van-1", batch_id, compress=compress, segments=_segments(batch, first))
    decoded = wire.decode_batch(data, max_bytes=1 << 22, max_records=1000)
    assert (decoded.vehicle, decoded.batch_id, decoded.unreadable) == ("van-1", batch_id, [])
    got = {r.seq: r for r in decoded.records}
    assert sorted(got) == list(range(first, first + len(batch)))
    for seq, original in enumerate(batch, start=first):
        _matches(convert.to_json(got[seq]), original)


def test_a_body_that_does_not_decode_is_set_aside_alone() -> None:
    good = [Scan(1.7e9 + i, f"00{i:018d}", "sscc") for i in range(3)]
    bodies = [convert.encode_body(s)[1] for s in good]
    bodies.insert(1, b"\xff\xff\xff")  # not a Scan message: a truncated varint
    segment = wire.Segment("scan", [10, 11, 12, 13], bodies)
    alien = wire.Segment("teleport", [14], [b"\x08\x01"])
    decoded = wire.decode_batch(
        wire.encode_batch("van-1", 7, segments=[segment, alien]), max_bytes=1 << 20, max_records=100
    )
    assert [r.seq for r in decoded.records] == [10, 12, 13]
    assert [r.scan.raw for r in decoded.records] == [s.raw for s in good]
    assert [(u.seq, u.kind, u.reason, u.body) for u in decoded.unreadable] == [
        (11, "scan", "undecodable", b"\xff\xff\xff"),
        (14, "teleport", "unknown_kind", b"\x08\x01"),
    ]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64), st.integers(0, 2**64 - 1), st.binary(max_size=200), st.booleans())
def test_the_header_of_a_broken_batch_is_still_read(
    vehicle: str, batch_id: int, tail: bytes, zlib_: bool
) -> None:
    data = wire.encode_batch(vehicle, batch_id, compress=zlib_, segments=[wire.Segment("fix", [1], [tail])])
    broken = data[: len(data) - 1] if zlib_ else data + b"\xff"
    assert wire.peek_header(broken) == (vehicle, batch_id)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_are_a_wire_error_or_a_batch(data: bytes) -> None:
    wire.peek_header(data)  # never raises
    try:
        batch = wire.decode_batch(data, max_bytes=500, max_records=50)
    except WireError as exc:
        assert str(exc)
    else:
        assert isinstance(batch, wire.Decoded) and len(batch.records) + len(batch.unreadable) <= 50


def test_a_zip_bomb_is_refused() -> None:
    blob = convert.encode(1, Signal(1.7e9, "x" * 1000, 1.0))
    data = wire.encode_batch("van-1", 1, [blob] * 5000, compress=True)
    assert len(data) < 100_000
    try:
        wire.decode_batch(data, max_bytes=1 << 20, max_records=10_000)
    except WireError as exc:
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
