"""The Transaction contract the uplink relies on, run for both upload orders (one suite, as
Telegraf's buffer_suite_test does for its buffers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbox import Outbox, Transaction
from protocols import convert
from protocols.records import Fix


def fix(i: int) -> Fix:
    return Fix(time=1_700_000_000 + i, mode=3, lat=48.1 + i * 1e-5, lon=11.5)


def seqs(tx: Transaction | None) -> list[int]:
    return [] if tx is None else [r.seq for r in tx.records]


def filled(path: Path, n: int, newest_first: bool) -> Outbox:
    ob = Outbox(path, newest_first=newest_first)
    for i in range(n):
        ob.append(fix(i))
    ob.flush()
    return ob


@pytest.fixture(params=["oldest-first", "newest-first"])
def order(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "newest-first")


def test_records_carry_kind_and_encode_body_bytes(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 3, order)
    tx = ob.batch(10)
    assert tx is not None
    expected = {i + 1: convert.encode_body(fix(i)) for i in range(3)}
    assert {r.seq: (r.kind, r.body) for r in tx.records} == expected
    ob.close()


def test_upload_order(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 10, order)
    got = [seqs(ob.batch(4)) for _ in range(4)]
    if order:
        assert got == [[10, 9, 8, 7], [6, 5, 4, 3], [2, 1], []]
    else:
        assert got == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10], []]
    assert ob.batch(4) is None
    ob.close()


def test_no_seq_handed_out_twice_while_open(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 50, order)
    open_txs = []
    seen: list[int] = []
    while tx := ob.batch(7):
        open_txs.append(tx)
        seen += seqs(tx)
        if len(open_txs) < 10:  # records keep arriving between batches, for a while
            for i in range(3):
                ob.append(fix(i))
            ob.flush()
    assert len(seen) == len(set(seen)) == ob.unacked_count()
    ob.close()


def test_accept_partial_ranges_releases_the_rest(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 10, order)
    tx = ob.batch(10)
    assert tx is not None
    assert tx.accept([(2, 3), (7, 7)]) == 3
    assert tx.accept([(2, 3)]) == 0  # late or doubled ack: idempotent
    again = ob.batch(10)
    assert sorted(seqs(again)) == [1, 4, 5, 6, 8, 9, 10]
    assert ob.batch(10) is None  # and those are open again now
    ob.close()


def test_accept_marks_only_seqs_of_its_transaction(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 10, order)
    tx = ob.batch(3)
    assert tx is not None
    assert tx.accept([(1, 10)]) == 3  # a range reaching past the batch acks only the batch
    assert ob.unacked_count() == 7
    ob.close()


def test_release_offers_again_and_release_twice_is_harmless(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 6, order)
    a, b = ob.batch(3), ob.batch(3)
    assert a is not None and b is not None
    a.release()
    a.release()
    again = ob.batch(10)
    assert sorted(seqs(again)) == sorted(seqs(a))
    assert ob.batch(10) is None  # b is still open, a's seqs are open again
    ob.close()


def test_release_all_offers_every_unacked_record(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 9, order)
    a, b, c = ob.batch(3), ob.batch(3), ob.batch(3)
    assert a is not None and b is not None and c is not None
    b.accept([(min(seqs(b)), max(seqs(b)))])
    ob.release_all()
    offered = []
    while tx := ob.batch(2):
        offered += seqs(tx)
    assert sorted(offered) == sorted(seqs(a) + seqs(c))
    # a late ack for a transaction released by release_all still counts (the collector has it)
    assert a.accept([(1, 9)]) == 3
    assert ob.unacked_count() == 3
    ob.close()


def test_quarantined_are_acked_counted_and_not_offered_again(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 8, order)
    tx = ob.batch(8)
    assert tx is not None
    n = tx.accept([(1, 4)], quarantined=[(5, 6, "bad_time"), (8, 8, "undecodable")])
    assert n == 7
    assert ob.stats.quarantined == {"bad_time": 2, "undecodable": 1}
    assert {s: a for s, a, _, _ in ob.rows()} == {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 0, 8: 2}
    ob.release_all()
    assert seqs(ob.batch(10)) == [7]
    ob.close()


def test_byte_cap_keeps_the_rest_for_the_next_batch(tmp_path: Path, order: bool) -> None:
    ob = filled(tmp_path / "o.db", 20, order)
    size = len(convert.encode_body(fix(0))[1])
    tx = ob.batch(20, max_bytes=(size + 8) * 5)
    assert tx is not None and len(tx.records) == 5
    tx.release()
    tx2 = ob.batch(20, max_bytes=(size + 8) * 3)  # released seqs come first, still capped
    assert tx2 is not None and seqs(tx2) == seqs(tx)[:3]
    rest: list[int] = []
    while t := ob.batch(20):
        rest += seqs(t)
    assert sorted(rest + seqs(tx2)) == list(range(1, 21))
    ob.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["batch", "accept", "release", "release_all"]), st.integers(0, 9))))
def test_any_interleaving_delivers_each_record_and_never_twice_at_once(ops: list[tuple[str, int]]) -> None:
    """Whatever the uplink does, open transactions never share a seq, and once it settles
    every record is acked exactly when the collector said so."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ob = filled(Path(d) / "o.db", 30, False)
        open_txs: list[Transaction] = []
        acked: set[int] = set()
        for op, k in ops:
            if op == "batch" and (tx := ob.batch(k + 1)):
                in_flight = {s for t in open_txs for s in seqs(t)}
                assert not in_flight & set(seqs(tx))
                assert not acked & set(seqs(tx))
                open_txs.append(tx)
            elif op in ("accept", "release") and open_txs:
                tx = open_txs.pop(k % len(open_txs))
                if op == "accept":
                    half = seqs(tx)[: len(seqs(tx)) // 2]
                    tx.accept([(s, s) for s in half])
                    acked |= set(half)
                else:
                    tx.release()
            elif op == "release_all":
                ob.release_all()
                open_txs.clear()
        ob.release_all()
        rest: list[int] = []
        while tx := ob.batch(7):
            rest += seqs(tx)
        assert sorted(rest) == sorted(set(range(1, 31)) - acked)
        ob.close()
