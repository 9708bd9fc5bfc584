"""Hostile input to the collector (issue 19): an authenticated van sends anything at all through
``Ingest.handle`` while a good van keeps sending between its batches.

Batches here are built with the generated protobuf classes (``pb.Batch``), not with
``protocols.wire``, so a fault in the framing code under test cannot hide itself. After every
call the store is read with plain ``sqlite3`` and checked against the input itself:

* ``handle`` returns an Ack and never needs its safety net (no ``internal_error``);
* the call is counted exactly once: a refusal under the Ack's reason, or a handled batch;
* a readable batch has every seq it carried (in 1..2^63-1) acked as stored or quarantined, each
  stored seq is a row of the store and each quarantined seq a row of the quarantine;
* rows are only ever added: no seq is stored twice or overwritten by a later body;
* nothing the hostile van sends lands under any other vehicle (it names the good van's seqs on
  purpose), and the good van's rows are exactly the records it sent, acked in full each time.
"""

from __future__ import annotations

import sqlite3
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.ingest import Ingest, Limits
from cloud.mqtt_ingest import MqttIngest
from cloud.store import SqliteStore
from protocols import topics
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.mqtt_url import parse_mqtt_url

BAD, GOOD = "van-bad", "van-good"
SEQ_MAX = 2**63 - 1
LIMITS = Limits(max_bytes=64 * 1024, max_records=500)
T0 = 1_700_000_000_000
GOOD_BATCH = 5

# -- the hostile van's repertoire ---------------------------------------------------------------

seqs_st = st.one_of(
    st.integers(0, 12),  # the hostile van's batches collide with each other, with other bodies
    st.integers(0, GOOD_BATCH * 8),  # and name the good van's seqs
    st.sampled_from([0, SEQ_MAX, SEQ_MAX + 1, 2**64 - 1]),
)
kinds_st = st.sampled_from(["fix", "signal", "scan", "gap", "document_status", "", "bogus", "ack", "Fix"])


def body_of(kind: str, draw: st.DrawFn) -> bytes:
    """A body for ``kind``: a valid one (sometimes absurd in value) or arbitrary bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=40))
    t = draw(st.sampled_from([T0, 0, -1, 2**62, T0 + 17]))
    if kind == "fix":
        lat = draw(st.sampled_from([481_000_000, 900_000_001, -(2**31)]))
        return pb.Fix(time_ms=t, mode=3, lat_e7=lat, lon_e7=115_000_000).SerializeToString()
    if kind == "signal":
        value = draw(st.sampled_from([1.5, float("nan"), float("inf")]))
        return pb.Signal(time_ms=t, name="Vehicle.Speed", value=value).SerializeToString()
    if kind == "gap":
        return pb.Gap(from_seq=draw(seqs_st), to_seq=draw(seqs_st)).SerializeToString()
    if kind == "document_status":
        status = pb.DocumentStatus(time_ms=t, document="config", version=draw(seqs_st), applied=False)
        return status.SerializeToString()
    return pb.Scan(time_ms=t, raw="]C1" + "0" * 18).SerializeToString()


@st.composite
def segment_st(draw: st.DrawFn) -> pb.Segment:
    kind = draw(kinds_st)
    seqs = draw(st.lists(seqs_st, max_size=8))
    codec = draw(st.sampled_from([pb.CODEC_MESSAGES] * 4 + [pb.CODEC_TRACK_V1, 7, 2**31 - 1]))
    n_bodies = draw(st.sampled_from([len(seqs)] * 3 + [0, len(seqs) + 1, max(0, len(seqs) - 1)]))
    segment = pb.Segment(kind=kind, codec=codec, seqs=seqs)  # type: ignore[arg-type]
    segment.bodies.extend(body_of(kind, draw) for _ in range(n_bodies))
    if draw(st.booleans()):
        segment.data = draw(st.binary(max_size=60))
    return segment


@st.composite
def record_st(draw: st.DrawFn) -> pb.Record:
    kind = draw(st.sampled_from(["fix", "signal", "scan", "gap", "document_status", None]))
    record = pb.Record(seq=draw(seqs_st))
    if kind is not None:
        try:
            getattr(record, kind).ParseFromString(body_of(kind, draw))
        except Exception:  # arbitrary bytes that are no such body: a record with only a seq
            record.ClearField("body")
    return record


@st.composite
def structured_st(draw: st.DrawFn) -> bytes:
    """A batch that parses: any vehicle name, whole records and segments of every sort, maybe
    zlib-packed (well, truncated, or with the wrong compression value)."""
    vehicle = draw(st.sampled_from([BAD, BAD, BAD, GOOD, "", "van/+/#", "x" * 65, "van-bad\x00"]))
    batch = pb.Batch(vehicle=vehicle, batch_id=draw(st.integers(0, 2**64 - 1)))
    batch.records.extend(draw(st.lists(record_st(), max_size=4)))
    batch.segments.extend(draw(st.lists(segment_st(), max_size=3)))
    packing = draw(st.sampled_from(["none", "none", "zlib", "truncated", "no_flag", "odd_flag"]))
    if packing == "none":
        return batch.SerializeToString()
    inner = pb.Batch(records=batch.records, segments=batch.segments).SerializeToString()
    packed = zlib.compress(inner)
    head = pb.Batch(vehicle=batch.vehicle, batch_id=batch.batch_id)
    if packing == "zlib":
        head.compression, head.packed = pb.COMPRESSION_ZLIB, packed
    elif packing == "truncated":
        head.compression, head.packed = pb.COMPRESSION_ZLIB, packed[: len(packed) // 2]
    elif packing == "no_flag":
        head.packed = packed
    else:
        head.compression, head.packed = 9, packed  # type: ignore[assignment]
    return head.SerializeToString()


@st.composite
def bomb_st(draw: st.DrawFn) -> bytes:
    """Small on the wire, beyond the limit inflated (or a packed batch that re-packs itself)."""
    inner = pb.Batch()
    inner.segments.add(
        kind="fix", seqs=[1], bodies=[b"\0" * draw(st.sampled_from([LIMITS.max_bytes, 10**6]))]
    )
    packed = zlib.compress(inner.SerializeToString(), 9)
    if draw(st.booleans()):
        nested = pb.Batch(vehicle=BAD, compression=pb.COMPRESSION_ZLIB, packed=packed).SerializeToString()
        packed = zlib.compress(nested)
    return pb.Batch(
        vehicle=BAD, batch_id=1, compression=pb.COMPRESSION_ZLIB, packed=packed
    ).SerializeToString()


@st.composite
def downlink_st(draw: st.DrawFn) -> bytes:
    """What belongs on the way down (acks, documents, collector_online) sent up as a batch."""
    ack = pb.Ack(vehicle=draw(st.sampled_from([BAD, GOOD])), batch_id=draw(st.integers(0, 99)))
    ack.stored.add(first=draw(seqs_st), last=draw(seqs_st))
    document = pb.Document(kind="config", envelope=draw(st.binary(max_size=80)))
    return draw(
        st.sampled_from(
            [
                ack.SerializeToString(),
                document.SerializeToString(),
                pb.Downlink(ack=ack).SerializeToString(),
                pb.Downlink(document=document).SerializeToString(),
                pb.Downlink(collector_online=True).SerializeToString(),
            ]
        )
    )


@st.composite
def mutated_st(draw: st.DrawFn) -> bytes:
    """A batch that parsed, with bytes flipped, cut off or repeated."""
    raw = bytearray(draw(structured_st()))
    for _ in range(draw(st.integers(1, 3))):
        if raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(raw)))
    return bytes(raw[:cut] + raw[cut:] * draw(st.integers(0, 2)))


@st.composite
def resend_st(draw: st.DrawFn) -> bytes:
    """Well-formed scans of its own on a few seqs, so one seq comes again with another body."""
    batch = pb.Batch(vehicle=BAD, batch_id=draw(st.integers(0, 9)))
    for seq in draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)):
        batch.records.add(seq=seq, scan=pb.Scan(time_ms=T0, raw=draw(st.sampled_from(["a", "b"]))))
    return batch.SerializeToString()


hostile_st = st.one_of(
    st.binary(max_size=300),
    structured_st(),
    structured_st(),
    resend_st(),
    bomb_st(),
    downlink_st(),
    mutated_st(),
)

# -- the checks -----------------------------------------------------------------------------------


def carried_seqs(data: bytes) -> set[int]:
    """Every seq in 1..2^63-1 a batch carries (whole records and segment seqs), read independently
    of the ingest; empty when it does not parse. Only used for batches the ingest accepted."""
    batch = pb.Batch()
    try:
        batch.ParseFromString(data)
        if batch.compression == pb.COMPRESSION_ZLIB:
            batch = pb.Batch.FromString(zlib.decompress(batch.packed))
    except Exception:
        return set()
    seqs = {r.seq for r in batch.records}
    for segment in batch.segments:
        if segment.codec != pb.CODEC_TRACK_V1:  # a track's seqs are runs, not a list
            seqs.update(segment.seqs)
    return {s for s in seqs if 1 <= s <= SEQ_MAX}


def spanned(ranges: object) -> set[int]:
    return {s for r in ranges for s in range(r.first, r.last + 1)}  # type: ignore[attr-defined]


def rows(db: Path) -> dict[tuple[str, int], bytes]:
    with sqlite3.connect(db) as conn:
        return {(v, s): bytes(b) for v, s, b in conn.execute("SELECT vehicle, seq, body FROM records")}


def quarantined_rows(db: Path) -> set[tuple[str, int | None]]:
    with sqlite3.connect(db) as conn:
        return {(v, s) for v, s in conn.execute("SELECT vehicle, seq FROM quarantine")}


def good_record(seq: int) -> pb.Record:
    return pb.Record(
        seq=seq, fix=pb.Fix(time_ms=T0 + seq * 1000, mode=3, lat_e7=481_000_000 + seq, lon_e7=115_000_000)
    )


def good_batch(first: int, *, segments: bool) -> bytes:
    """The good van's next batch, as the generated stub frames it: whole records or a segment."""
    records = [good_record(s) for s in range(first, first + GOOD_BATCH)]
    batch = pb.Batch(vehicle=GOOD, batch_id=first)
    if segments:
        batch.segments.add(
            kind="fix", seqs=[r.seq for r in records], bodies=[r.fix.SerializeToString() for r in records]
        )
    else:
        batch.records.extend(records)
    return batch.SerializeToString()


@contextmanager
def collector() -> Iterator[tuple[Ingest, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "collector.db"
        store = SqliteStore(db)
        try:
            yield Ingest(store, LIMITS), db
        finally:
            store.close()


def send_checked(ingest: Ingest, db: Path, data: bytes, vehicle: str) -> pb.Ack:
    """``handle`` one input and check everything the module docstring promises about it."""
    before_rows = rows(db)
    before_counted = ingest.rejects.total + ingest.counts["batches"]
    before_reason = ingest.rejects.counts.copy()
    ack = ingest.handle(data, vehicle)
    assert isinstance(ack, pb.Ack)
    assert "internal_error" not in ingest.rejects.counts, ingest.rejects.counts
    assert ingest.rejects.total + ingest.counts["batches"] == before_counted + 1
    after_rows = rows(db)
    if ack.rejected:
        assert ingest.rejects.counts[ack.reason] == before_reason[ack.reason] + 1
        assert after_rows == before_rows
        return ack
    assert ack.vehicle == vehicle
    stored, aside = spanned(ack.stored), spanned(ack.quarantined)
    assert carried_seqs(data) <= stored | aside
    assert {(vehicle, s) for s in stored} <= after_rows.keys()
    assert {(vehicle, s) for s in aside if 1 <= s <= SEQ_MAX} <= quarantined_rows(db)
    if any(not 1 <= s <= SEQ_MAX for s in aside):  # kept with a NULL seq (the seq is in the body)
        assert (vehicle, None) in quarantined_rows(db)
    for key, body in before_rows.items():
        assert after_rows[key] == body, f"{key} overwritten"
    assert {v for v, _ in after_rows.keys() - before_rows.keys()} <= {vehicle}
    return ack


@settings(max_examples=150, deadline=None)
@given(st.lists(hostile_st, min_size=1, max_size=6), st.booleans())
def test_a_hostile_van_between_a_good_vans_batches(hostile: list[bytes], segments: bool) -> None:
    with collector() as (ingest, db):
        first = 1
        for data in hostile:
            send_checked(ingest, db, data, BAD)
            ack = send_checked(ingest, db, good_batch(first, segments=segments), GOOD)
            assert not ack.rejected and spanned(ack.stored) == set(range(first, first + GOOD_BATCH))
            assert not ack.quarantined
            first += GOOD_BATCH
        held = {s: pb.Record.FromString(b) for (v, s), b in rows(db).items() if v == GOOD}
        assert held == {s: good_record(s) for s in range(1, first)}
        assert not any(v == GOOD for v, _ in quarantined_rows(db))


@settings(max_examples=60, deadline=None)
@given(hostile_st)
def test_the_same_hostile_batch_twice_stores_nothing_new(data: bytes) -> None:
    with collector() as (ingest, db):
        first = send_checked(ingest, db, data, BAD)
        held = rows(db)
        again = send_checked(ingest, db, data, BAD)
        assert rows(db) == held
        assert (again.rejected, again.reason) == (first.rejected, first.reason)
        assert spanned(again.stored) | spanned(again.quarantined) == spanned(first.stored) | spanned(
            first.quarantined
        )


def test_a_spoofed_batch_for_another_van_is_refused_and_that_van_stores_its_own() -> None:
    """Known hand-made case: the bad van names the good van's next seqs with other bodies."""
    with collector() as (ingest, db):
        spoof = pb.Batch(vehicle=GOOD, batch_id=1)
        spoof.records.extend(
            pb.Record(seq=s, fix=pb.Fix(time_ms=T0, lat_e7=1, lon_e7=1)) for s in range(1, 6)
        )
        ack = send_checked(ingest, db, spoof.SerializeToString(), BAD)
        assert (ack.rejected, ack.reason, ack.vehicle) == (True, "vehicle_mismatch", BAD)
        ack = send_checked(ingest, db, good_batch(1, segments=True), GOOD)
        assert spanned(ack.stored) == {1, 2, 3, 4, 5} and ingest.counts["conflicts"] == 0


def test_a_zlib_bomb_is_refused_as_oversized_without_inflating_it() -> None:
    inner = pb.Batch()
    inner.segments.add(kind="fix", seqs=[1], bodies=[b"\0" * (50 * 1024 * 1024)])
    packed = zlib.compress(inner.SerializeToString(), 9)
    assert len(packed) < LIMITS.max_bytes  # 50 MiB in about 50 KiB
    bomb = pb.Batch(vehicle=BAD, batch_id=3, compression=pb.COMPRESSION_ZLIB, packed=packed)
    with collector() as (ingest, db):
        ack = send_checked(ingest, db, bomb.SerializeToString(), BAD)
        assert (ack.rejected, ack.reason, ack.batch_id) == (True, "oversized", 3)


def test_documents_and_acks_published_on_the_wrong_topics_are_counted_and_ignored() -> None:
    """On MQTT the collector reads telemetry topics only; whatever else reaches its worker (a
    van publishing an ack, a document or a collectors announcement) is a counted ``bad_topic``."""
    from paho.mqtt.client import MQTTMessage

    payloads = {
        topics.topic(GOOD, topics.ACK): pb.Ack(vehicle=GOOD, batch_id=1).SerializeToString(),
        topics.topic(GOOD, topics.DOCUMENTS): pb.Document(kind="config", envelope=b"{}").SerializeToString(),
        topics.COLLECTORS: b"online",
        "dropline/v1/van-good/telemetry/extra": good_batch(1, segments=False),
        "dropline/v1/+/telemetry": good_batch(1, segments=False),
    }
    with collector() as (ingest, db):
        mqtt = MqttIngest(ingest, parse_mqtt_url("mqtt://127.0.0.1:1"))  # never connected
        for name, payload in payloads.items():
            message = MQTTMessage(topic=name.encode())
            message.payload = payload
            mqtt._process(message)
        assert ingest.rejects.counts["bad_topic"] == len(payloads)
        assert rows(db) == {} and ingest.counts["batches"] == 0
