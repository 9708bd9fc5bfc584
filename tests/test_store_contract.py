"""The ``Store`` contract, one suite run against every store (SQLite file, real PostgreSQL):
idempotent writes, progress (contiguous, open and explained gaps) in any arrival order, conflicts
and quarantine, export form, the same progress after reopening, and two writers on one database.
Expected values are computed by hand or from an independent set model, never from a store."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.store import CONFLICT, EXPORT_KINDS, Quarantine, SqliteStore, Store, VehicleProgress
from cloud.store_postgres import PostgresStore
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.postgres import Postgres, run_postgres

T0 = 1_700_000_000_000

Opener = Callable[[], Store]
"""Opens the test's store; calling it again opens the same database (a restart, a 2nd collector)."""


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


def progress(store: Store, vehicle: str = "van-1") -> VehicleProgress:
    return next(p for p in store.vehicles() if p.vehicle == vehicle)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "collector.db"

        def open_store() -> Store:
            opened.append(SqliteStore(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("postgres").new_store_url(request.node.name)

        def open_store() -> Store:
            opened.append(PostgresStore(url))
            return opened[-1]

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


def test_same_batch_twice_is_stored_once_and_acknowledged_twice(store: Store) -> None:
    batch = [fix(s) for s in range(1, 101)]
    first = store.write("van-1", batch)
    again = store.write("van-1", batch)
    assert first.stored_ranges == again.stored_ranges == [(1, 100)]
    assert (first.inserted, first.duplicates) == (100, 0)
    assert (again.inserted, again.duplicates) == (0, 100)
    assert again.contiguous == 100
    assert len(list(store.export("fixes"))) == 100
    assert progress(store).records == 100


def test_duplicates_inside_one_batch_and_vehicles_are_separate(store: Store) -> None:
    result = store.write("van-1", [fix(3), fix(1), fix(3), fix(2)])
    assert result.stored_ranges == [(1, 3)] and result.inserted == 3 and result.duplicates == 1
    other = store.write("van-2", [fix(1), fix(2)])
    assert other.inserted == 2 and other.contiguous == 2
    assert [(p.vehicle, p.records, p.contiguous) for p in store.vehicles()] == [
        ("van-1", 3, 3),
        ("van-2", 2, 2),
    ]


def test_vehicles_are_ordered_by_code_point(store: Store) -> None:
    """Byte order, not a locale's (PostgreSQL's default collation may sort 'b' before 'C')."""
    for name in ("b", "C", "a", "_", "Z"):
        store.write(name, [fix(1)])
    assert [p.vehicle for p in store.vehicles()] == ["C", "Z", "_", "a", "b"]
    assert [r["vehicle"] for r in store.export("fixes")] == ["C", "Z", "_", "a", "b"]


def test_out_of_order_batches_close_the_open_gap(store: Store) -> None:
    newest = store.write("van-1", [fix(s) for s in range(201, 301)])
    assert newest.contiguous == 0 and newest.open_gap_count == 1 and newest.first_open_gap == (1, 200)
    store.write("van-1", [fix(s) for s in range(1, 101)])
    p = progress(store)
    assert (p.contiguous, p.max_seq, p.open_gaps) == (100, 300, [(101, 200)])
    last = store.write("van-1", [fix(s) for s in range(101, 201)])
    assert last.contiguous == 300 and last.open_gap_count == 0
    assert progress(store).open_gaps == []


def test_gap_records_explain_missing_ranges(store: Store) -> None:
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


def test_gap_over_records_already_held_explains_only_the_missing_ones(store: Store) -> None:
    store.write("van-1", [fix(s) for s in (1, 2, 5, 6)])
    store.write("van-1", [gap(7, 2, 6)])  # 2, 5, 6 arrived before the van evicted its copies
    p = progress(store)
    assert (p.contiguous, p.open_gaps, p.explained_gaps) == (7, [], [(3, 4)])


def test_gap_arriving_before_the_records_around_it(store: Store) -> None:
    result = store.write("van-1", [gap(100, 10, 99)])
    assert result.contiguous == 0 and result.first_open_gap == (1, 9)
    result = store.write("van-1", [fix(s) for s in range(1, 10)])
    assert result.contiguous == 100 and result.open_gap_count == 0


def test_restart_reopens_with_the_same_progress(opener: Opener) -> None:
    store = opener()
    store.write("van-1", [fix(s) for s in range(1, 11)])
    store.write("van-1", [gap(31, 11, 20), *[fix(s) for s in range(40, 45)]])
    before = store.vehicles()
    store.close()
    store = opener()
    assert store.vehicles() == before
    # the cached ranges are rebuilt from the database: closing the open gap still works
    result = store.write("van-1", [fix(s) for s in range(21, 40) if s != 31])
    assert result.contiguous == 44 and result.open_gap_count == 0
    assert progress(store).records == 10 + 1 + 5 + 18


def test_a_second_writer_on_the_same_database_is_noticed(opener: Opener) -> None:
    """Two collectors sharing one database (MQTT shared subscription) keep progress right: each
    notices what the other committed, in alternation and with a gap explained by the other."""
    a, b = opener(), opener()
    a.write("van-1", [fix(s) for s in range(1, 11)])
    b.write("van-1", [fix(s) for s in range(11, 21)])
    result = a.write("van-1", [fix(s) for s in range(21, 31)])
    assert result.contiguous == 30 and result.open_gap_count == 0
    b.write("van-1", [gap(45, 31, 40)])
    result = a.write("van-1", [fix(s) for s in range(41, 45)])
    assert (result.contiguous, result.open_gap_count) == (45, 0)
    assert b.write("van-1", [fix(30)]).duplicates == 1
    p = progress(b)
    assert (p.records, p.contiguous, p.explained_gaps) == (35, 45, [(31, 40)])


def test_export_kinds_and_json_form(store: Store) -> None:
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
    assert list(store.export("events")) == []
    assert set(EXPORT_KINDS) >= {"fixes", "signals", "scans", "alerts", "gaps", "all"}
    with pytest.raises(ValueError):
        store.export("nonsense")
    assert progress(store, "van-2").position == {
        "seq": 1,
        "time": "2023-11-14T22:13:21.000Z",
        "lat": 48.1000001,
        "lon": 11.5,
    }


def test_latest_position_is_the_newest_fix_whatever_the_arrival_order(store: Store) -> None:
    store.write("van-1", [fix(s) for s in range(50, 60)])
    store.write("van-1", [fix(s) for s in range(1, 10)])
    position = progress(store).position
    assert position is not None and position["seq"] == 59


def test_unknown_body_kind_is_kept_opaque(store: Store) -> None:
    newer = pb.Record(seq=1)
    newer.MergeFromString(b"\x9a\x06\x03abc")  # field 99, length-delimited: a body kind of a later schema
    result = store.write("van-1", [newer])
    assert result.inserted == 1 and result.contiguous == 1
    assert [r["kind"] for r in store.export("all")] == ["unknown"]


def test_a_conflicting_body_is_quarantined_and_the_first_kept(store: Store) -> None:
    store.write("van-1", [fix(1), fix(2)])
    other = pb.Record(seq=2, fix=pb.Fix(time_ms=T0, mode=3, lat_e7=1, lon_e7=2))
    result = store.write("van-1", [fix(1), other, fix(3)])
    assert result.stored_ranges == [(1, 1), (3, 3)]
    assert result.quarantined == [(2, 2, CONFLICT)] and result.conflicts == 1
    assert (result.inserted, result.duplicates, result.contiguous) == (1, 1, 3)
    assert [r["lat"] for r in store.export("fixes")][1] == pytest.approx(48.1000002)  # the first body
    [held] = store.export("quarantine")
    assert (held["seq"], held["reason"], held["kind"]) == (2, CONFLICT, "fix")


def test_quarantined_records_are_kept_and_count_as_explained(store: Store) -> None:
    aside = [
        Quarantine(2, "fix", "bad_time", b"\x08\x02"),
        Quarantine(0, "fix", "bad_seq", b"\x08\x00"),
        Quarantine(0, "fix", "bad_seq", b"\x08\x00"),  # the same bytes again: kept once
    ]
    result = store.write("van-1", [fix(1), fix(3)], aside)
    assert result.stored_ranges == [(1, 1), (3, 3)]
    assert result.quarantined == [(0, 0, "bad_seq"), (2, 2, "bad_time")]
    assert result.contiguous == 3 and result.open_gap_count == 0
    assert store.write("van-1", [], aside[:1]).contiguous == 3  # again: nothing new
    held = list(store.export("quarantine"))
    assert [(q["seq"], q["reason"], q["body_base64"]) for q in held] == [
        (None, "bad_seq", "CAA="),
        (2, "bad_time", "CAI="),
    ]
    p = progress(store)
    assert (p.quarantined, p.open_gaps, p.records) == ([(2, 2)], [], 2)


def test_concurrent_writers_from_threads(store: Store) -> None:
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


def test_two_stores_racing_on_one_vehicle_lose_no_progress(opener: Opener) -> None:
    """Two collectors writing the same van's batches at the same moment, interleaved by thread
    scheduling: the final progress is the union, as a set model says."""
    a, b = opener(), opener()
    seqs = list(range(1, 3001))
    random.Random(7).shuffle(seqs)
    batches = [seqs[i : i + 50] for i in range(0, len(seqs), 50)]

    def run(store: Store, mine: list[list[int]]) -> None:
        for batch in mine:
            store.write("van-1", [fix(s) for s in batch])

    threads = [
        threading.Thread(target=run, args=(a, batches[0::2])),
        threading.Thread(target=run, args=(b, batches[1::2])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (a, b):
        p = progress(s)
        assert (p.records, p.contiguous, p.max_seq, p.open_gaps) == (3000, 3000, 3000, [])
    assert a.write("van-1", [fix(3001)]).contiguous == 3001


# -- against a set model --------------------------------------------------------------------------


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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
    opener: Opener,
    n: int,
    evicted: list[tuple[int, int]],
    lost: set[int],
    batch_size: int,
    dup_batches: int,
    seed: int,
    reopen: bool,
) -> None:
    """A van's seqs 1..n: some evicted (a gap record after them says so), some never arrive
    (lost: must show as open gaps), the rest in shuffled batches, some sent twice. Each example
    is a new vehicle in the test's database."""
    vehicle = f"van-{uuid.uuid4().hex[:12]}"
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

    store = opener()
    for i, batch in enumerate(batches):
        result = store.write(vehicle, batch)
        assert result.stored_ranges == _model_ranges({r.seq for r in batch})
        if reopen and i == len(batches) // 2:
            store.close()
            store = opener()

    held = {r.seq for r in sent}
    covered = held | explained
    contiguous = 0
    while contiguous + 1 in covered:
        contiguous += 1
    max_seq = max(held) if held else 0
    p = next((p for p in store.vehicles() if p.vehicle == vehicle), None)
    if not held:
        assert p is None
    else:
        assert p is not None
        assert p.records == len(held)
        assert p.max_seq == max_seq
        assert p.contiguous == contiguous
        assert p.open_gaps == _model_ranges(set(range(1, max_seq + 1)) - covered)
        assert p.explained_gaps == _model_ranges(explained - held)
        assert [r["seq"] for r in store.export("all", vehicle=vehicle)] == sorted(held)
