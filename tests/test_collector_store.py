"""The collector's SQLite store: idempotent writes, progress (contiguous, open and explained gaps)
in any arrival order, and the same progress after reopening the file."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.spans import Spans
from cloud.store import EXPORT_KINDS, SqliteStore, VehicleProgress
from protocols.dropline.v1 import dropline_pb2 as pb

T0 = 1_700_000_000_000


def fix(seq: int) -> pb.Record:
    return pb.Record(
        seq=seq, fix=pb.Fix(time_ms=T0 + seq * 1000, mode=3, lat_e7=481_000_000 + seq, lon_e7=115_000_000)
    )


def signal(seq: int) -> pb.Record:
    return pb.Record(seq=seq, signal=pb.Signal(time_ms=T0 + seq, name="Vehicle.Speed", value=seq / 10))


def scan(seq: int) -> pb.Record:
    return pb.Record(
        seq=seq,
        scan=pb.Scan(
            time_ms=T0 + seq, raw="00340123450000000017", kind="sscc", fields={"sscc": "340123450000000017"}
        ),
    )


def gap(seq: int, first: int, last: int) -> pb.Record:
    return pb.Record(seq=seq, gap=pb.Gap(from_seq=first, to_seq=last, reason="disk_budget"))


def progress(store: SqliteStore, vehicle: str = "van-1") -> VehicleProgress:
    return next(p for p in store.vehicles() if p.vehicle == vehicle)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "collector.db")
    yield s
    s.close()


def test_same_batch_twice_is_stored_once_and_acknowledged_twice(store: SqliteStore) -> None:
    batch = [fix(s) for s in range(1, 101)]
    first = store.write("van-1", batch)
    again = store.write("van-1", batch)
    assert first.stored_ranges == again.stored_ranges == [(1, 100)]
    assert (first.inserted, first.duplicates) == (100, 0)
    assert (again.inserted, again.duplicates) == (0, 100)
    assert again.contiguous == 100
    assert len(list(store.export("fixes"))) == 100
    assert progress(store).records == 100


def test_duplicates_inside_one_batch_and_vehicles_are_separate(store: SqliteStore) -> None:
    result = store.write("van-1", [fix(3), fix(1), fix(3), fix(2)])
    assert result.stored_ranges == [(1, 3)] and result.inserted == 3 and result.duplicates == 1
    other = store.write("van-2", [fix(1), fix(2)])
    assert other.inserted == 2 and other.contiguous == 2
    assert [(p.vehicle, p.records, p.contiguous) for p in store.vehicles()] == [
        ("van-1", 3, 3),
        ("van-2", 2, 2),
    ]


def test_out_of_order_batches_close_the_open_gap(store: SqliteStore) -> None:
    newest = store.write("van-1", [fix(s) for s in range(201, 301)])
    assert newest.contiguous == 0 and newest.open_gap_count == 1 and newest.first_open_gap == (1, 200)
    store.write("van-1", [fix(s) for s in range(1, 101)])
    p = progress(store)
    assert (p.contiguous, p.max_seq, p.open_gaps) == (100, 300, [(101, 200)])
    last = store.write("van-1", [fix(s) for s in range(101, 201)])
    assert last.contiguous == 300 and last.open_gap_count == 0
    assert progress(store).open_gaps == []


def test_gap_records_explain_missing_ranges(store: SqliteStore) -> None:
    # seqs 1-10 stored, 11-50 evicted on the van (gap record 51), 52-60 stored, 61-70 still travelling
    store.write("van-1", [fix(s) for s in range(1, 11)])
    store.write("van-1", [gap(51, 11, 50), *[fix(s) for s in range(52, 61)]])
    store.write("van-1", [fix(s) for s in range(71, 81)])
    p = progress(store)
    assert p.contiguous == 60
    assert p.open_gaps == [(61, 70)]
    assert p.explained_gaps == [(11, 50)]
    gaps = list(store.export("gaps"))
    assert gaps == [
        {"vehicle": "van-1", "seq": 51, "kind": "gap", "from_seq": 11, "to_seq": 50, "reason": "disk_budget"}
    ]


def test_gap_over_records_already_held_explains_only_the_missing_ones(store: SqliteStore) -> None:
    store.write("van-1", [fix(s) for s in (1, 2, 5, 6)])
    store.write("van-1", [gap(7, 2, 6)])  # 2, 5, 6 arrived before the van evicted its copies
    p = progress(store)
    assert (p.contiguous, p.open_gaps, p.explained_gaps) == (7, [], [(3, 4)])


def test_gap_arriving_before_the_records_around_it(store: SqliteStore) -> None:
    result = store.write("van-1", [gap(100, 10, 99)])
    assert result.contiguous == 0 and result.first_open_gap == (1, 9)
    result = store.write("van-1", [fix(s) for s in range(1, 10)])
    assert result.contiguous == 100 and result.open_gap_count == 0


def test_restart_reopens_with_the_same_progress(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    store = SqliteStore(path)
    store.write("van-1", [fix(s) for s in range(1, 11)])
    store.write("van-1", [gap(31, 11, 20), *[fix(s) for s in range(40, 45)]])
    before = store.vehicles()
    store.close()
    store = SqliteStore(path)
    assert store.vehicles() == before
    # the cached ranges are rebuilt from the file: closing the open gap still works
    result = store.write("van-1", [fix(s) for s in range(21, 40) if s != 31])
    assert result.contiguous == 44 and result.open_gap_count == 0
    assert progress(store).records == 10 + 1 + 5 + 18
    store.close()


def test_a_second_writer_on_the_same_file_is_noticed(tmp_path: Path) -> None:
    """Two collectors sharing one database (MQTT shared subscription) keep progress right."""
    a, b = SqliteStore(tmp_path / "c.db"), SqliteStore(tmp_path / "c.db")
    a.write("van-1", [fix(s) for s in range(1, 11)])
    b.write("van-1", [fix(s) for s in range(11, 21)])
    result = a.write("van-1", [fix(s) for s in range(21, 31)])
    assert result.contiguous == 30 and result.open_gap_count == 0
    assert progress(a).records == 30
    a.close()
    b.close()


def test_export_kinds_and_json_form(store: SqliteStore) -> None:
    store.write("van-2", [fix(1), signal(2), scan(3)])
    store.write("van-1", [fix(2), fix(1)])
    fixes = list(store.export("fixes"))
    assert [(r["vehicle"], r["seq"]) for r in fixes] == [("van-1", 1), ("van-1", 2), ("van-2", 1)]
    assert fixes[0]["lat"] == pytest.approx(48.1000001) and fixes[0]["time"] == "2023-11-14T22:13:21.000Z"
    assert next(iter(store.export("signals"))) == {
        "vehicle": "van-2",
        "seq": 2,
        "kind": "signal",
        "t": 1_700_000_000.002,
        "signal": "Vehicle.Speed",
        "value": 0.2,
    }
    assert next(iter(store.export("scans")))["fields"] == {"sscc": "340123450000000017"}
    assert [r["seq"] for r in store.export("all", vehicle="van-2")] == [1, 2, 3]
    assert list(store.export("deliveries")) == [] and list(store.export("events")) == []
    assert set(EXPORT_KINDS) >= {"fixes", "signals", "scans", "alerts", "gaps", "all"}
    with pytest.raises(ValueError):
        store.export("nonsense")
    assert progress(store, "van-2").position == {
        "seq": 1,
        "time": "2023-11-14T22:13:21.000Z",
        "lat": 48.1000001,
        "lon": 11.5,
    }


def test_latest_position_is_the_newest_fix_whatever_the_arrival_order(store: SqliteStore) -> None:
    store.write("van-1", [fix(s) for s in range(50, 60)])
    store.write("van-1", [fix(s) for s in range(1, 10)])
    position = progress(store).position
    assert position is not None and position["seq"] == 59


def test_unknown_body_kind_is_kept_opaque(store: SqliteStore) -> None:
    newer = pb.Record(seq=1)
    newer.MergeFromString(b"\x9a\x06\x03abc")  # field 99, length-delimited: a body kind of a later schema
    result = store.write("van-1", [newer])
    assert result.inserted == 1 and result.contiguous == 1
    assert [r["kind"] for r in store.export("all")] == ["unknown"]


def test_concurrent_writers_from_threads(store: SqliteStore) -> None:
    def van(name: str) -> None:
        seqs = list(range(1, 2001))
        random.Random(name).shuffle(seqs)
        for i in range(0, len(seqs), 100):
            store.write(name, [fix(s) for s in seqs[i : i + 100]])

    threads = [threading.Thread(target=van, args=(f"van-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(p.records, p.contiguous, p.open_gaps) for p in store.vehicles()] == [(2000, 2000, [])] * 4


# -- ranges against a model -----------------------------------------------------------------------


def _model_ranges(seqs: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of a set, computed independently of the code under test: a seq starts a run
    when its predecessor is absent, and the run ends at the first successor that is absent."""
    out = []
    for s in sorted(seqs):
        if s - 1 not in seqs:
            last = s
            while last + 1 in seqs:
                last += 1
            out.append((s, last))
    return out


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), max_size=40))
def test_spans_match_a_set(adds: list[tuple[int, int]]) -> None:
    spans, model = Spans(), set[int]()
    for first, length in adds:
        spans.add(first, first + length)
        model.update(range(first, first + length + 1))
        assert spans.ranges() == _model_ranges(model)
    upto = max(model) if model else 0
    missing = set(range(1, upto + 1)) - model
    assert spans.holes(upto) == _model_ranges(missing)
    assert spans.hole_count() == len(_model_ranges(missing))
    assert spans.end() == upto
    assert spans.first_hole() == (_model_ranges(missing)[0] if missing else None)
    assert len(spans) == len(_model_ranges(model))
    prefix = 0
    while prefix + 1 in model:
        prefix += 1
    assert spans.prefix() == prefix


@given(
    st.lists(st.tuples(st.integers(1, 100), st.integers(0, 10)), max_size=15),
    st.lists(st.tuples(st.integers(1, 100), st.integers(0, 10)), max_size=15),
)
def test_spans_minus_matches_a_set(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    sa, sb = Spans([(f, f + n) for f, n in a]), Spans([(f, f + n) for f, n in b])
    ma = {s for f, n in a for s in range(f, f + n + 1)}
    mb = {s for f, n in b for s in range(f, f + n + 1)}
    assert sa.minus(sb) == _model_ranges(ma - mb)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 120),
    evicted=st.lists(st.tuples(st.integers(1, 120), st.integers(0, 15)), max_size=3),
    lost=st.sets(st.integers(1, 120), max_size=10),
    batch_size=st.integers(1, 40),
    dup_batches=st.integers(0, 3),
    seed=st.integers(0, 2**32),
    reopen=st.booleans(),
)
def test_random_batches_permutations_and_duplicates_match_a_set_model(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    evicted: list[tuple[int, int]],
    lost: set[int],
    batch_size: int,
    dup_batches: int,
    seed: int,
    reopen: bool,
) -> None:
    """A van's seqs 1..n: some evicted (a gap record after them says so), some never arrive
    (lost: must show as open gaps), the rest in shuffled batches, some sent twice."""
    rng = random.Random(seed)
    records: dict[int, pb.Record] = {s: fix(s) for s in range(1, n + 1)}
    explained: set[int] = set()
    next_seq = n + 1
    for first, length in evicted:
        last = min(first + length, n)
        if first > last:
            continue
        explained.update(range(first, last + 1))
        records[next_seq] = gap(next_seq, first, last)
        next_seq += 1
    for s in explained:
        records.pop(s, None)
    sent = [r for s, r in records.items() if s not in lost or records[s].HasField("gap")]
    rng.shuffle(sent)
    batches = [sent[i : i + batch_size] for i in range(0, len(sent), batch_size)]
    batches += [rng.choice(batches) for _ in range(dup_batches) if batches]
    rng.shuffle(batches)

    path = tmp_path_factory.mktemp("model") / "c.db"
    store = SqliteStore(path)
    for i, batch in enumerate(batches):
        result = store.write("van-1", batch)
        assert result.stored_ranges == _model_ranges({r.seq for r in batch})
        if reopen and i == len(batches) // 2:
            store.close()
            store = SqliteStore(path)

    held = {r.seq for r in sent}
    covered = held | explained
    contiguous = 0
    while contiguous + 1 in covered:
        contiguous += 1
    max_seq = max(held) if held else 0
    p = next((p for p in store.vehicles() if p.vehicle == "van-1"), None)
    if not held:
        assert p is None
    else:
        assert p is not None
        assert p.records == len(held)
        assert p.max_seq == max_seq
        assert p.contiguous == contiguous
        assert p.open_gaps == _model_ranges(set(range(1, max_seq + 1)) - covered)
        assert p.explained_gaps == _model_ranges(explained - held)
        assert [r["seq"] for r in store.export("all")] == sorted(held)
    store.close()
