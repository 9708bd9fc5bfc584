"""The outbox's bulk upload class: photo and signature chunks go after every other record, in
either upload order, across releases and byte caps, and every record is still sent until acked."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.outbox import Outbox
from protocols.records import BlobChunk, Fix, Scan

T0 = 1_700_000_000.0


def chunk(i: int, size: int = 100) -> BlobChunk:
    return BlobChunk(T0, "b1", i, 1000, "0" * 64, "image/jpeg", "s1/p1", bytes([i % 256]) * size)


def fix(i: int) -> Fix:
    return Fix(time=T0 + i, mode=3, lat=48.1 + i * 1e-5, lon=11.5)


def fill(ob: Outbox, kinds: str) -> dict[int, str]:
    """Append one record per letter (b = blob chunk, f = fix, s = scan); seq -> kind as appended."""
    out = {}
    for i, k in enumerate(kinds):
        record = chunk(i) if k == "b" else fix(i) if k == "f" else Scan(T0 + i, f"RAW{i}", "unknown")
        out[ob.append(record)] = {"b": "blob_chunk", "f": "fix", "s": "scan"}[k]
    ob.flush()
    return out


@pytest.mark.parametrize("newest_first", [False, True])
def test_backlog_of_chunks_goes_after_fixes_and_scans(tmp_path: Path, newest_first: bool) -> None:
    ob = Outbox(tmp_path / "o.db", newest_first=newest_first)
    kinds = fill(ob, "bbbbbbfbbsbbff" + "b" * 20 + "fs")
    non_bulk = {s for s, k in kinds.items() if k != "blob_chunk"}
    sent: list[int] = []
    while (tx := ob.batch(3)) is not None:
        sent += [r.seq for r in tx.records]
        tx.accept([(1, 10**9)])
    assert sorted(sent) == sorted(kinds)  # everything, once
    assert set(sent[: len(non_bulk)]) == non_bulk  # every non-bulk record before any chunk
    bulk = sent[len(non_bulk) :]
    assert bulk == sorted(bulk)  # chunks oldest first, whatever the order of the rest
    ob.close()


def test_released_chunks_wait_behind_new_telemetry(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    fill(ob, "bbbb")
    tx = ob.batch(10)
    assert tx is not None and [r.kind for r in tx.records] == ["blob_chunk"] * 4
    tx.release()  # the link dropped
    new = fill(ob, "ff")
    tx2 = ob.batch(10)
    assert tx2 is not None
    assert [r.seq for r in tx2.records] == [*new, 1, 2, 3, 4]  # new fixes first, then the chunks again
    ob.close()


def test_byte_cap_returns_unsent_chunks_for_the_next_batch(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    for i in range(6):
        ob.append(chunk(i, size=4000))
    ob.flush()
    first = ob.batch(100, max_bytes=20_000)
    assert first is not None and len(first.records) == 4
    first.release()  # released chunks, too, come back when a batch has no room for them
    seen: list[int] = []
    while (tx := ob.batch(100, max_bytes=9000)) is not None:
        assert len(tx.records) == 2  # two 4 KB chunks fit under 9000 bytes, three do not
        seen += [r.seq for r in tx.records]
        tx.accept([(1, 100)])
    assert seen == [1, 2, 3, 4, 5, 6]
    ob.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.text(alphabet="bfs", min_size=1, max_size=30),
    actions=st.lists(
        st.tuples(st.integers(1, 7), st.sampled_from(["accept", "release", "half", "hold"])), max_size=40
    ),
    newest_first=st.booleans(),
)
def test_every_record_is_offered_until_acked(
    tmp_path_factory: pytest.TempPathFactory, kinds: str, actions: list[tuple[int, str]], newest_first: bool
) -> None:
    """Random batches, acks, partial acks and releases: no seq is in two open transactions,
    and draining at the end acks every record exactly once overall."""
    ob = Outbox(tmp_path_factory.mktemp("o") / "o.db", newest_first=newest_first)
    appended = fill(ob, kinds)
    acked: list[int] = []
    open_seqs: set[int] = set()
    held = []
    for size, action in actions:
        tx = ob.batch(size)
        if tx is None:
            continue
        seqs = [r.seq for r in tx.records]
        assert not open_seqs & set(seqs)
        for r in tx.records:
            assert r.kind == appended[r.seq]
        if action == "hold":  # still in flight while later batches are taken
            held.append(tx)
            open_seqs.update(seqs)
        elif action == "release":
            tx.release()
        elif action == "half":  # ack the first half; the rest is offered again
            ranges = [(s, s) for s in seqs[: len(seqs) // 2]]
            tx.accept(ranges)
            acked += seqs[: len(seqs) // 2]
        else:
            tx.accept([(s, s) for s in seqs])
            acked += seqs
    for tx in held:
        tx.release()
    while (tx := ob.batch(5)) is not None:
        seqs = [r.seq for r in tx.records]
        tx.accept([(s, s) for s in seqs])
        acked += seqs
    assert sorted(acked) == sorted(appended)
    ob.close()
