"""The collector's fast path for track segments (``wire.decode_rows``: no protobuf message per
fix) stores exactly what the message path stores: the same batches sent once as compacted track
segments and once as plain ``CODEC_MESSAGES`` segments of the same fix bodies give the same acks,
byte-identical record rows, the same quarantine, progress and export, in SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.ingest import MAX_TIME_MS, MIN_FIX_TIME_MS, Ingest
from cloud.store import SEQ_MAX, SqliteStore, Store
from cloud.store_postgres import PostgresStore
from protocols import track_codec, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.postgres import Postgres, run_postgres

VAN = "van-1"
T0 = 1_700_000_000_000
I32 = 2**31
U32 = 2**32

# Values near every bound the ingest checks (time, position, seq) and every field's range.
times = st.one_of(
    st.integers(T0, T0 + 10**9),
    st.sampled_from([0, -1, MIN_FIX_TIME_MS - 1, MIN_FIX_TIME_MS, MAX_TIME_MS - 1, MAX_TIME_MS]),
    st.integers(-(2**63), 2**63 - 1),
)
lats = st.one_of(
    st.integers(-900_000_000, 900_000_000), st.sampled_from([0, 900_000_001, -900_000_001, -I32, I32 - 1])
)
lons = st.one_of(
    st.integers(-1_800_000_000, 1_800_000_000), st.sampled_from([0, 1_800_000_001, -1_800_000_001, -I32])
)
seqs = st.one_of(st.integers(0, 300))
huge_seqs = st.sampled_from([SEQ_MAX, SEQ_MAX + 1])
"""Seqs at the top of the range, last in a track batch only: a track's seqs travel as zigzagged
deltas between runs, which must fit 64 bits (a van's seqs only grow)."""


@st.composite
def fixes(draw: st.DrawFn) -> pb.Fix:
    f = pb.Fix(time_ms=draw(times), mode=draw(st.sampled_from([0, 1, 2, 3, U32 - 1])))
    f.lat_e7, f.lon_e7 = draw(lats), draw(lons)
    for name in track_codec.OPTIONAL:
        if draw(st.booleans()):
            low, high = (-I32, I32 - 1) if name == "alt_msl_cm" else (0, U32 - 1)
            setattr(f, name, draw(st.one_of(st.sampled_from([0, low, high]), st.integers(low, high))))
    return f


@st.composite
def batch_fixes(draw: st.DrawFn) -> list[tuple[int, pb.Fix]]:
    """Mostly a run of consecutive seqs (as a van sends them), with odd seqs (0 among them),
    repeats and reorderings mixed in, and maybe a seq beyond SQLite's integers at the end."""
    start = draw(st.integers(1, 200))
    n = draw(st.integers(1, 40))
    out = [(start + i, draw(fixes())) for i in range(n)]
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(out)))
        seq = draw(st.one_of(seqs, st.sampled_from([s for s, _ in out])))
        out.insert(at, (seq, draw(fixes())))
    if draw(st.booleans()):
        out.append((draw(huge_seqs), draw(fixes())))
    return out


def scans(seq_list: list[int]) -> wire.Segment:
    """Another kind beside the fixes, overlapping their seqs at times (a conflict either way)."""
    bodies = [
        pb.Scan(time_ms=T0 + s % 1000, raw="00340123450000000017", kind="sscc").SerializeToString()
        for s in seq_list
    ]
    return wire.Segment("scan", seq_list, bodies)


Opener = Callable[[], Store]

SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
"""Where the SQLite examples live: memory, where the store's fsync per commit costs nothing, so
a busy disk cannot stretch a hundred examples past the test's timeout."""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


def rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the ingest writes, as rows (bodies as bytes), in a fixed order."""
    queries = {
        "records": "SELECT vehicle, seq, kind, time_ms, body FROM records ORDER BY vehicle, seq",
        "quarantine": "SELECT vehicle, seq, kind, reason, body, received_ms FROM quarantine"
        " ORDER BY vehicle, seq, body",
        "spans": "SELECT vehicle, what, first, last FROM spans ORDER BY vehicle, what, first",
        "vehicles": "SELECT vehicle, records, contiguous, max_seq, fix_seq, fix_time_ms, lat_e7, lon_e7"
        " FROM vehicles ORDER BY vehicle",
    }
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            return {name: [tuple(r) for r in db.execute(sql)] for name, sql in queries.items()}
    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.url) as pg:
        return {
            name: [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                for r in pg.execute(sql.encode())
            ]
            for name, sql in queries.items()
        }


def exported(store: Store) -> dict[str, list[dict[str, Any]]]:
    return {kind: list(store.export(kind)) for kind in ("all", "fixes", "quarantine")}


def send_both(opener: Opener, batches: list[list[tuple[int, pb.Fix]]], scan_seqs: list[int]) -> None:
    """Each batch once as a track segment (referencing the fix the collector holds at the
    previous batch's last seq, as a van does) and once as plain messages; same outcome."""
    track_store, plain_store = opener(), opener()
    track, plain = Ingest(track_store), Ingest(plain_store)
    try:
        reference: tuple[int, pb.Fix] | None = None
        for batch_id, batch in enumerate(batches, start=1):
            seq_list = [s for s, _ in batch]
            fix_list = [f for _, f in batch]
            extra = [scans(scan_seqs)] if scan_seqs and batch_id == 1 else []
            as_track = wire.track_segment(seq_list, fix_list, reference)
            as_plain = wire.Segment("fix", seq_list, [f.SerializeToString() for f in fix_list])
            track_ack = track.handle(wire.encode_batch(VAN, batch_id, segments=[as_track, *extra]), VAN)
            plain_ack = plain.handle(wire.encode_batch(VAN, batch_id, segments=[as_plain, *extra]), VAN)
            assert track_ack.SerializeToString(deterministic=True) == plain_ack.SerializeToString(
                deterministic=True
            )
            assert not track_ack.rejected and track_ack.reason == ""
            held = plain_store.fix(VAN, seq_list[-1]) if 1 <= seq_list[-1] <= SEQ_MAX else None
            reference = None if held is None else (seq_list[-1], held.fix)
        assert rows(track_store) == rows(plain_store)
        assert exported(track_store) == exported(plain_store)
        assert track_store.vehicles() == plain_store.vehicles()
        stats = track.stats(), plain.stats()
        assert stats[0] == stats[1]
    finally:
        track_store.close()
        plain_store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(batch_fixes(), min_size=1, max_size=3), st.lists(st.one_of(seqs, huge_seqs), max_size=5))
def test_a_track_segment_is_stored_as_its_fixes_sent_as_messages_sqlite(
    batches: list[list[tuple[int, pb.Fix]]], scan_seqs: list[int]
) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        names = iter(("track.db", "plain.db"))
        send_both(lambda: SqliteStore(Path(tmp) / next(names), clock=lambda: 1.7e9), batches, scan_seqs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(batch_fixes(), min_size=1, max_size=3), st.lists(st.one_of(seqs, huge_seqs), max_size=5))
def test_a_track_segment_is_stored_as_its_fixes_sent_as_messages_postgres(
    postgres: Postgres, batches: list[list[tuple[int, pb.Fix]]], scan_seqs: list[int]
) -> None:
    send_both(lambda: PostgresStore(postgres.new_store_url("track"), clock=lambda: 1.7e9), batches, scan_seqs)


def test_a_good_track_is_stored_whole_and_its_last_fix_is_the_next_reference(tmp_path: Path) -> None:
    """The fast path really is taken and stores: a clean drive, two batches, the second
    referencing the first's last fix from the ingest's memory."""
    store = SqliteStore(tmp_path / "c.db")
    ingest = Ingest(store)
    drive = [
        pb.Fix(time_ms=T0 + i * 1000, mode=3, lat_e7=481_000_000 + i * 37, lon_e7=115_000_000)
        for i in range(40)
    ]
    first = wire.encode_batch(VAN, 1, segments=[wire.track_segment(range(1, 21), drive[:20])])
    second = wire.encode_batch(
        VAN, 2, segments=[wire.track_segment(range(21, 41), drive[20:], (20, drive[19]))]
    )
    assert isinstance(wire.decode_rows(first, 1 << 20, 100).records[0], wire.TrackFix)
    for data in (first, second):
        ack = ingest.handle(data, VAN)
        assert ack.reason == "" and not ack.quarantined
    assert [(r.first, r.last) for r in ack.stored] == [(21, 40)] and ack.contiguous == 40
    assert [r["lat"] for r in store.export("fixes")] == [f.lat_e7 / 1e7 for f in drive]
    position = store.vehicles()[0].position
    assert position is not None and (position["seq"], position["lat"]) == (40, drive[-1].lat_e7 / 1e7)
    store.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), fixes()), max_size=20))
def test_record_bodies_are_the_bytes_protobuf_serialises(pairs: list[tuple[int, pb.Fix]]) -> None:
    seq_list = [s for s, _ in pairs]
    columns = track_codec.columns_of([f for _, f in pairs])
    want = [pb.Record(seq=s, fix=f).SerializeToString() for s, f in pairs]
    assert track_codec.record_bodies(seq_list, columns) == want
