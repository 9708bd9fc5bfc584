"""The ingest refuses malformed, oversized and hostile batches as a whole, each with a counted
reason and a rejected Ack, and the next good batch is still stored."""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.ingest import MAX_BATCH_BYTES, STORE_UNAVAILABLE, Ingest, Limits
from cloud.store import SqliteStore, WriteResult
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb

T0 = 1_700_000_000_000


def fix(seq: int, time_ms: int | None = None, lat_e7: int = 481_000_000) -> bytes:
    f = pb.Fix(time_ms=T0 + seq if time_ms is None else time_ms, mode=3, lat_e7=lat_e7, lon_e7=115_000_000)
    return pb.Record(seq=seq, fix=f).SerializeToString()


def good(
    vehicle: str = "van-1", first: int = 1, n: int = 10, batch_id: int = 7, compress: bool = False
) -> bytes:
    return wire.encode_batch(vehicle, batch_id, [fix(s) for s in range(first, first + n)], compress=compress)


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    store = SqliteStore(tmp_path / "collector.db")
    yield Ingest(store, Limits(max_bytes=64 * 1024, max_records=1000))
    store.close()


def assert_still_works(ingest: Ingest, first: int = 1) -> None:
    ack = ingest.handle(good(first=first), "van-1")
    assert not ack.rejected and [(r.first, r.last) for r in ack.stored] == [(first, first + 9)]


def test_good_batch_acked_after_commit(ingest: Ingest) -> None:
    ack = ingest.handle(good(n=100, compress=True), "van-1")
    assert (ack.vehicle, ack.batch_id, ack.rejected, ack.contiguous) == ("van-1", 7, False, 100)
    assert [(r.first, r.last) for r in ack.stored] == [(1, 100)]
    again = ingest.handle(good(n=100), None)  # a retry (here over gRPC): acked again, stored once
    assert [(r.first, r.last) for r in again.stored] == [(1, 100)]
    stats = ingest.stats()
    assert (stats["inserted"], stats["duplicates"], stats["batches"]) == (100, 100, 2)
    assert [p.records for p in ingest.store.vehicles()] == [100]


def test_empty_batch_is_acked_with_nothing_stored(ingest: Ingest) -> None:
    ack = ingest.handle(wire.encode_batch("van-1", 3, []), "van-1")
    assert not ack.rejected and ack.batch_id == 3 and not ack.stored


def _gap(seq: int, first: int, last: int) -> bytes:
    return pb.Record(seq=seq, gap=pb.Gap(from_seq=first, to_seq=last, reason="x")).SerializeToString()


BOMB = zlib.compress(b"\x00" * (10 * 1024 * 1024), 9)  # ~10 KB that inflates to 10 MB

HOSTILE: dict[str, tuple[bytes, str | None, str]] = {
    "random bytes": (b"\xff\xfe\x00garbage\x13\x37" * 10, "van-1", "undecodable"),
    "oversized": (good(n=3000), "van-1", "oversized"),
    "too many records": (
        wire.encode_batch("van-1", 1, [fix(s) for s in range(1, 1002)]),
        "van-1",
        "too_many_records",
    ),
    "zip bomb": (
        pb.Batch(
            vehicle="van-1", batch_id=1, compression=pb.COMPRESSION_ZLIB, packed=BOMB
        ).SerializeToString(),
        "van-1",
        "oversized",
    ),
    "corrupt zlib": (
        pb.Batch(vehicle="van-1", compression=pb.COMPRESSION_ZLIB, packed=b"not zlib").SerializeToString(),
        "van-1",
        "bad_compression",
    ),
    "unknown compression": (
        pb.Batch(vehicle="van-1", compression=pb.Compression.ValueType(7)).SerializeToString(),
        "van-1",
        "unknown_compression",
    ),
    "wrong vehicle for topic": (good(vehicle="van-2"), "van-1", "vehicle_mismatch"),
    "vehicle with slash": (good(vehicle="van/1"), None, "bad_vehicle"),
    "vehicle wildcard": (good(vehicle="#"), None, "bad_vehicle"),
    "vehicle empty": (good(vehicle=""), None, "bad_vehicle"),
    "vehicle too long": (good(vehicle="v" * 65), None, "bad_vehicle"),
    "seq 0": (wire.encode_batch("van-1", 1, [fix(1), fix(0)]), "van-1", "bad_seq"),
    "seq beyond int64": (wire.encode_batch("van-1", 1, [fix(2**63, time_ms=T0)]), "van-1", "bad_seq"),
    "record with no body": (
        wire.encode_batch("van-1", 1, [pb.Record(seq=5).SerializeToString()]),
        "van-1",
        "no_body",
    ),
    "fix dated 1970": (wire.encode_batch("van-1", 1, [fix(1, time_ms=0)]), "van-1", "bad_time"),
    "fix in 2200": (wire.encode_batch("van-1", 1, [fix(1, time_ms=7_258_118_400_000)]), "van-1", "bad_time"),
    "signal before 1970": (
        wire.encode_batch(
            "van-1", 1, [pb.Record(seq=1, signal=pb.Signal(time_ms=-5, name="x")).SerializeToString()]
        ),
        "van-1",
        "bad_time",
    ),
    "latitude 91": (wire.encode_batch("van-1", 1, [fix(1, lat_e7=910_000_000)]), "van-1", "bad_position"),
    "gap reversed": (wire.encode_batch("van-1", 1, [_gap(10, 5, 3)]), "van-1", "bad_gap"),
    "gap from 0": (wire.encode_batch("van-1", 1, [_gap(10, 0, 3)]), "van-1", "bad_gap"),
    "gap covering the future": (wire.encode_batch("van-1", 1, [_gap(10, 5, 2**62)]), "van-1", "bad_gap"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_batch_is_refused_counted_and_harmless(ingest: Ingest, name: str) -> None:
    data, topic_vehicle, reason = HOSTILE[name]
    ack = ingest.handle(data, topic_vehicle)
    assert ack.rejected and ack.reason == reason and not ack.stored
    assert ingest.rejects.counts[reason] == 1
    if topic_vehicle is not None:
        assert ack.vehicle == topic_vehicle  # the answer goes back to the van that sent it
    assert ingest.store.vehicles() == [] or all(p.records == 0 for p in ingest.store.vehicles())
    assert_still_works(ingest)


def test_a_body_kind_of_a_newer_schema_is_stored_not_refused(ingest: Ingest) -> None:
    newer = pb.Record(seq=1)
    newer.MergeFromString(b"\x7a\x03abc")  # Record field 15: a body this build does not know
    ack = ingest.handle(wire.encode_batch("van-1", 1, [newer.SerializeToString()]), "van-1")
    assert not ack.rejected and [(r.first, r.last) for r in ack.stored] == [(1, 1)]
    assert [r["kind"] for r in ingest.store.export("all")] == ["unknown"]


def test_a_bad_record_refuses_the_whole_batch(ingest: Ingest) -> None:
    data = wire.encode_batch("van-1", 1, [fix(1), fix(2), fix(0), fix(3)])
    assert ingest.handle(data, "van-1").reason == "bad_seq"
    assert ingest.store.vehicles() == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(ingest: Ingest, data: bytes) -> None:
    before = ingest.counts["batches"] + ingest.rejects.total
    ack = ingest.handle(data, "van-9")
    assert isinstance(ack, pb.Ack)
    assert ack.rejected == (ack.reason != "")
    assert ingest.counts["batches"] + ingest.rejects.total == before + 1  # every batch counted once


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_good_batches_are_stored_or_refused_never_raise(ingest: Ingest, data: st.DataObject) -> None:
    raw = bytearray(good(n=5, first=data.draw(st.integers(1, 1000)), compress=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    ack = ingest.handle(bytes(raw), None)
    assert ack.rejected or all(r.first >= 1 for r in ack.stored)
    assert_still_works(ingest, first=2000)


def test_limits_default_to_module_constants(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    ingest = Ingest(store)
    assert ingest.limits.max_bytes == MAX_BATCH_BYTES
    store.close()


def test_store_failure_is_not_a_rejection(tmp_path: Path) -> None:
    """A transient store failure (here: another process holds the write lock) answers 'nothing
    stored', not 'rejected', so the van sends the batch again later; then it is stored."""
    path = tmp_path / "c.db"
    store = SqliteStore(path, busy_timeout_ms=100)
    ingest = Ingest(store)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ack = ingest.handle(good(), "van-1")
    assert not ack.rejected and ack.reason == STORE_UNAVAILABLE and not ack.stored
    assert ingest.rejects.counts[STORE_UNAVAILABLE] == 1
    other.execute("ROLLBACK")
    other.close()
    assert_still_works(ingest)
    store.close()


def test_after_commit_hook_sees_the_committed_result(tmp_path: Path) -> None:
    seen: list[tuple[str, WriteResult]] = []
    store = SqliteStore(tmp_path / "c.db")
    ingest = Ingest(store, after_commit=lambda v, r: seen.append((v, r)))
    ingest.handle(good(), "van-1")
    assert seen[0][0] == "van-1" and seen[0][1].inserted == 10
    store.close()
