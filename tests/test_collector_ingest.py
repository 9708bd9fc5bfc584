"""The ingest refuses a batch as a whole only when it cannot be read as a whole (a counted reason,
a rejected Ack naming its batch); a bad record inside a readable batch is quarantined alone, with
its reason, and the good records around it are stored. The next good batch is always stored."""

from __future__ import annotations

import base64
import json
import math
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

HOSTILE: dict[str, tuple[bytes, str | None, str, int]] = {  # data, topic vehicle, reason, batch id
    "random bytes": (b"\xff\xfe\x00garbage\x13\x37" * 10, "van-1", "undecodable", 0),
    "oversized": (good(n=3000), "van-1", "oversized", 7),
    "too many records": (
        wire.encode_batch("van-1", 1, [fix(s) for s in range(1, 1002)]),
        "van-1",
        "too_many_records",
        1,
    ),
    "zip bomb": (
        pb.Batch(
            vehicle="van-1", batch_id=1, compression=pb.COMPRESSION_ZLIB, packed=BOMB
        ).SerializeToString(),
        "van-1",
        "oversized",
        1,
    ),
    "corrupt zlib": (
        pb.Batch(
            vehicle="van-1", batch_id=4, compression=pb.COMPRESSION_ZLIB, packed=b"not zlib"
        ).SerializeToString(),
        "van-1",
        "bad_compression",
        4,
    ),
    "unknown compression": (
        pb.Batch(vehicle="van-1", batch_id=5, compression=pb.Compression.ValueType(7)).SerializeToString(),
        "van-1",
        "unknown_compression",
        5,
    ),
    "wrong vehicle for topic": (good(vehicle="van-2"), "van-1", "vehicle_mismatch", 7),
    "vehicle with slash": (good(vehicle="van/1"), None, "bad_vehicle", 7),
    "vehicle wildcard": (good(vehicle="#"), None, "bad_vehicle", 7),
    "vehicle empty": (good(vehicle=""), None, "bad_vehicle", 7),
    "vehicle too long": (good(vehicle="v" * 65), None, "bad_vehicle", 7),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_batch_unreadable_as_a_whole_is_refused_counted_and_harmless(ingest: Ingest, name: str) -> None:
    data, topic_vehicle, reason, batch_id = HOSTILE[name]
    ack = ingest.handle(data, topic_vehicle)
    assert ack.rejected and ack.reason == reason and not ack.stored and not ack.quarantined
    assert ack.batch_id == batch_id  # the van can tell which batch was refused
    assert ingest.rejects.counts[reason] == 1
    if topic_vehicle is not None:
        assert ack.vehicle == topic_vehicle  # the answer goes back to the van that sent it
    assert ingest.store.vehicles() == [] or all(p.records == 0 for p in ingest.store.vehicles())
    assert_still_works(ingest)


def _signal(seq: int, value: float, time_ms: int = T0) -> bytes:
    return pb.Record(seq=seq, signal=pb.Signal(time_ms=time_ms, name="x", value=value)).SerializeToString()


def _scan(seq: int) -> bytes:
    scan = pb.Scan(time_ms=T0 + seq, raw="00340123450000000017", kind="sscc")
    return pb.Record(seq=seq, scan=scan).SerializeToString()


BAD_RECORDS: dict[str, tuple[bytes, str]] = {  # a record at seq 5 (or an impossible seq), its reason
    "seq 0": (fix(0), "bad_seq"),
    "seq beyond int64": (fix(2**63, time_ms=T0), "bad_seq"),
    "seq 2^64-1": (fix(2**64 - 1, time_ms=T0), "bad_seq"),
    "record with no body": (pb.Record(seq=5).SerializeToString(), "no_body"),
    "fix dated 1970": (fix(5, time_ms=0), "bad_time"),
    "fix in 1999 (GPS week rollover)": (fix(5, time_ms=927_676_800_000), "bad_time"),
    "fix in 2150": (fix(5, time_ms=5_679_590_400_000), "bad_time"),
    "fix in 2200": (fix(5, time_ms=7_258_118_400_000), "bad_time"),
    "signal before 1970": (_signal(5, 1.0, time_ms=-5), "bad_time"),
    "signal NaN": (_signal(5, math.nan), "non_finite"),
    "signal +inf": (_signal(5, math.inf), "non_finite"),
    "signal -inf": (_signal(5, -math.inf), "non_finite"),
    "latitude 91": (fix(5, lat_e7=910_000_000), "bad_position"),
    "gap reversed": (_gap(5, 3, 1), "bad_gap"),
    "gap from 0": (_gap(5, 0, 3), "bad_gap"),
    "gap covering the future": (_gap(5, 3, 2**62), "bad_gap"),
}


@pytest.mark.parametrize("name", list(BAD_RECORDS))
def test_a_bad_record_is_quarantined_alone_and_its_neighbours_stored(ingest: Ingest, name: str) -> None:
    bad, reason = BAD_RECORDS[name]
    bad_seq = pb.Record.FromString(bad).seq
    neighbours = [fix(s) for s in range(1, 5)] + [_scan(s) for s in range(6, 10)]
    if bad_seq != 5:
        neighbours.append(fix(5))  # the impossible seq is not one of the van's
    data = wire.encode_batch("van-1", 3, [*neighbours[:4], bad, *neighbours[4:]])
    ack = ingest.handle(data, "van-1")
    assert not ack.rejected and ack.reason == "" and ack.batch_id == 3
    assert [(r.first, r.last) for r in ack.stored] == ([(1, 4), (6, 9)] if bad_seq == 5 else [(1, 9)])
    assert [(q.first, q.last, q.reason) for q in ack.quarantined] == [(bad_seq, bad_seq, reason)]
    assert ack.contiguous == 9  # the quarantined seq counts as explained
    [progress] = ingest.store.vehicles()
    assert (progress.records, progress.open_gaps) == (8 if bad_seq == 5 else 9, [])
    assert len(list(ingest.store.export("scans"))) == 4
    [held] = ingest.store.export("quarantine")
    assert (held["vehicle"], held["reason"]) == ("van-1", reason)
    assert held["seq"] == (bad_seq if 1 <= bad_seq < 2**63 else None)
    assert base64.b64decode(held["body_base64"]) == bad  # the bytes as the van sent them
    assert ingest.stats()["quarantine"] == {reason: 1} and ingest.rejects.total == 0
    again = ingest.handle(data, "van-1")  # a resend: the same answer, nothing held twice
    assert again.quarantined == ack.quarantined and again.stored == ack.stored
    assert len(list(ingest.store.export("quarantine"))) == 1
    assert_still_works(ingest, first=100)


def test_a_week_rollover_fix_does_not_sink_the_scans_of_its_batch(ingest: Ingest) -> None:
    """The reliability issue's case, in the agent's framing (per-kind segments): one fix dated
    1999 among fixes and deliveries. The deliveries are stored, the fix quarantined."""
    fixes = [pb.Fix(time_ms=T0 + s, mode=3, lat_e7=481_000_000, lon_e7=115_000_000) for s in range(4)]
    fixes[2].time_ms = 927_676_800_000  # 1999-05-26: a receiver after the 1024-week rollover
    scans = [pb.Scan(time_ms=T0 + s, raw=f"00340123450000000{s:03d}", kind="sscc") for s in range(3)]
    data = wire.encode_batch(
        "van-1",
        11,
        segments=[
            wire.Segment("fix", [1, 2, 3, 4], [f.SerializeToString() for f in fixes]),
            wire.Segment("scan", [5, 6, 7], [s.SerializeToString() for s in scans]),
        ],
        compress=True,
    )
    ack = ingest.handle(data, "van-1")
    assert not ack.rejected
    assert [(r.first, r.last) for r in ack.stored] == [(1, 2), (4, 7)]
    assert [(q.first, q.last, q.reason) for q in ack.quarantined] == [(3, 3, "bad_time")]
    assert [r["raw"] for r in ingest.store.export("scans")] == [s.raw for s in scans]
    assert ingest.store.vehicles()[0].quarantined == [(3, 3)]


def test_an_undecodable_body_is_quarantined_and_the_rest_flows(ingest: Ingest) -> None:
    body = [pb.Fix(time_ms=T0 + s, mode=3).SerializeToString() for s in range(3)]
    garbage = b"\x0a\xff\xff\xff"  # a length that runs past the end
    data = wire.encode_batch(
        "van-1", 2, segments=[wire.Segment("fix", [1, 2, 3, 4], [body[0], garbage, body[1], body[2]])]
    )
    ack = ingest.handle(data, "van-1")
    assert not ack.rejected
    assert [(r.first, r.last) for r in ack.stored] == [(1, 1), (3, 4)]
    assert [(q.first, q.last, q.reason) for q in ack.quarantined] == [(2, 2, "undecodable")]
    assert ack.contiguous == 4
    [held] = ingest.store.export("quarantine")
    assert (held["seq"], held["kind"], base64.b64decode(held["body_base64"])) == (2, "fix", garbage)


def test_a_segment_of_an_unknown_kind_is_quarantined(ingest: Ingest) -> None:
    data = wire.encode_batch(
        "van-1", 2, [fix(1)], segments=[wire.Segment("teleport", [2, 3], [b"\x08\x01", b"\x08\x02"])]
    )
    ack = ingest.handle(data, "van-1")
    assert [(q.first, q.last, q.reason) for q in ack.quarantined] == [(2, 3, "unknown_kind")]
    assert [(r.first, r.last) for r in ack.stored] == [(1, 1)] and ack.contiguous == 3


def test_a_seq_twice_in_a_batch_with_two_bodies_is_a_counted_conflict(ingest: Ingest) -> None:
    first, second = fix(2), fix(2, time_ms=T0 + 99)
    ack = ingest.handle(wire.encode_batch("van-1", 1, [fix(1), first, second, fix(3), fix(3)]), "van-1")
    assert [(r.first, r.last) for r in ack.stored] == [(1, 3)]
    assert [(q.first, q.last, q.reason) for q in ack.quarantined] == [(2, 2, "conflict")]
    stats = ingest.stats()
    assert (stats["inserted"], stats["duplicates"], stats["conflicts"]) == (
        3,
        1,
        1,
    )  # fix(3) twice: duplicate
    assert [r["time"] for r in ingest.store.export("fixes") if r["seq"] == 2] == ["2023-11-14T22:13:20.002Z"]
    [held] = ingest.store.export("quarantine")
    assert (held["seq"], held["reason"], base64.b64decode(held["body_base64"])) == (2, "conflict", second)


def test_a_resent_seq_with_another_body_is_a_counted_conflict(ingest: Ingest) -> None:
    ingest.handle(wire.encode_batch("van-1", 1, [fix(s) for s in range(1, 6)]), "van-1")
    changed = fix(4, lat_e7=481_000_001)
    ack = ingest.handle(wire.encode_batch("van-1", 2, [fix(3), changed, fix(5), fix(6)]), "van-1")
    assert [(r.first, r.last) for r in ack.stored] == [(3, 3), (5, 6)]
    assert [(q.first, q.last, q.reason) for q in ack.quarantined] == [(4, 4, "conflict")]
    stats = ingest.stats()
    assert (stats["conflicts"], stats["duplicates"], stats["inserted"]) == (1, 2, 6)
    assert [r["lat"] for r in ingest.store.export("fixes") if r["seq"] == 4] == [48.1]  # the first body stays
    [held] = ingest.store.export("quarantine")
    assert (held["seq"], base64.b64decode(held["body_base64"])) == (4, changed)


def _scan_with_entries(order: list[tuple[str, str]]) -> bytes:
    """A Record(seq=1) with a Scan whose map entries are written in the given order."""
    scan = pb.Scan(time_ms=T0, raw="x", kind="gs1").SerializeToString()
    for key, value in order:
        entry = pb.Scan.FieldsEntry(key=key, value=value).SerializeToString()
        scan += b"\x22" + wire.varint(len(entry)) + entry
    return b"\x08\x01\x62" + wire.varint(len(scan)) + scan


def test_a_resend_whose_map_entries_come_in_another_order_is_no_conflict(ingest: Ingest) -> None:
    a = _scan_with_entries([("01", "09501101020917"), ("21", "12345")])
    b = _scan_with_entries([("21", "12345"), ("01", "09501101020917")])
    assert a != b and pb.Record.FromString(a) == pb.Record.FromString(b)
    ingest.handle(wire.encode_batch("van-1", 1, [a]), "van-1")
    ack = ingest.handle(wire.encode_batch("van-1", 2, [b]), "van-1")
    assert not ack.quarantined and [(r.first, r.last) for r in ack.stored] == [(1, 1)]
    assert (ingest.stats()["duplicates"], ingest.stats()["conflicts"]) == (1, 0)


def test_non_finite_signals_never_reach_the_export_as_non_json(tmp_path: Path) -> None:
    """NaN and infinities are quarantined (``non_finite``); every export line parses as strict
    JSON, and the finite signals around them are exported as sent."""
    from dropline_cli import main

    db = tmp_path / "c.db"
    store = SqliteStore(db)
    values = [1.5, math.nan, -0.0, math.inf, -math.inf, 1e308]
    batch = wire.encode_batch("van-1", 1, [_signal(i + 1, v) for i, v in enumerate(values)])
    ack = Ingest(store).handle(batch, "van-1")
    store.close()
    quarantined = [(q.first, q.last, q.reason) for q in ack.quarantined]
    assert quarantined == [(2, 2, "non_finite"), (4, 5, "non_finite")]

    def strict(text: str) -> object:
        raise ValueError(f"not JSON: {text}")

    lines: dict[str, list[dict[str, object]]] = {}
    for kind in ("all", "signals", "quarantine", "vehicles"):
        out = tmp_path / f"{kind}.jsonl"
        assert main(["export", "--db", str(db), "--kind", kind, "-o", str(out)]) == 0
        lines[kind] = [json.loads(line, parse_constant=strict) for line in out.read_text().splitlines()]
    assert [(r["seq"], r["value"]) for r in lines["signals"]] == [(1, 1.5), (3, -0.0), (6, 1e308)]
    assert [(r["seq"], r["reason"]) for r in lines["quarantine"]] == [
        (2, "non_finite"),
        (4, "non_finite"),
        (5, "non_finite"),
    ]
    [vehicle] = lines["vehicles"]
    assert (vehicle["quarantined"], vehicle["open_gaps"], vehicle["contiguous"]) == ([[2, 2], [4, 5]], [], 6)


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
