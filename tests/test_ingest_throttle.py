"""A sender's budget of refused or quarantined batches (``cloud.ingest.Budget``): past it, its
batches are answered ``throttled`` (not rejected, nothing stored, not decoded) until the bucket
refills at ``rate``; other senders are untouched, and a throttled good batch sent again later is
stored in full. The clock is injected: every figure below is computed by hand from rate and burst."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.ingest import THROTTLED, Budget, Ingest
from cloud.store import SqliteStore
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fix(seq: int) -> bytes:
    f = pb.Fix(time_ms=T0 + seq, mode=3, lat_e7=481_000_000, lon_e7=115_000_000)
    return pb.Record(seq=seq, fix=f).SerializeToString()


def good(vehicle: str, first: int, n: int = 10, batch_id: int = 7) -> bytes:
    return wire.encode_batch(vehicle, batch_id, [fix(s) for s in range(first, first + n)])


def spoofed(batch_id: int) -> bytes:
    """Readable, but naming van-1: refused as vehicle_mismatch when van-bad sends it."""
    return good("van-1", 10**6, batch_id=batch_id)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "collector.db"


@pytest.fixture
def ingest(db: Path, clock: Clock) -> Iterator[Ingest]:
    store = SqliteStore(db)
    yield Ingest(store, monotonic=clock, budget=Budget(rate=2.0, burst=5.0))
    store.close()


def held(db: Path, vehicle: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [
            s for (s,) in conn.execute("SELECT seq FROM records WHERE vehicle = ? ORDER BY seq", (vehicle,))
        ]
    finally:
        conn.close()


def test_past_the_burst_a_sender_is_throttled_unread_and_others_flow(
    ingest: Ingest, clock: Clock, db: Path
) -> None:
    for i in range(5):  # burst 5: five refusals are read and judged
        ack = ingest.handle(spoofed(i), "van-bad")
        assert (ack.rejected, ack.reason) == (True, "vehicle_mismatch")
    ack = ingest.handle(spoofed(42), "van-bad")
    assert (ack.rejected, ack.reason, ack.batch_id, ack.vehicle) == (False, THROTTLED, 42, "van-bad")
    assert not ack.stored and not ack.quarantined
    # the bad van's own good batch is not read either: nothing stored, the van sends it later
    ack = ingest.handle(good("van-bad", 1), "van-bad")
    assert (ack.rejected, ack.reason, list(ack.stored)) == (False, THROTTLED, [])
    assert held(db, "van-bad") == []
    # another van is untouched
    ack = ingest.handle(good("van-1", 1), "van-1")
    assert (ack.reason, [(r.first, r.last) for r in ack.stored]) == ("", [(1, 10)])
    stats = ingest.stats()
    assert stats["rejects"] == {"vehicle_mismatch": 5, THROTTLED: 2}


def test_the_bucket_refills_at_rate_up_to_burst(ingest: Ingest, clock: Clock, db: Path) -> None:
    for i in range(5):
        ingest.handle(spoofed(i), "van-bad")
    assert ingest.handle(spoofed(5), "van-bad").reason == THROTTLED
    clock.now += 0.4  # 0.8 of a token at 2/s: still out
    assert ingest.handle(spoofed(6), "van-bad").reason == THROTTLED
    clock.now += 0.1  # one token: one batch read (and refused), then out again
    assert ingest.handle(spoofed(7), "van-bad").reason == "vehicle_mismatch"
    assert ingest.handle(spoofed(8), "van-bad").reason == THROTTLED
    clock.now += 100.0  # full again, but never more than the burst
    reasons = [ingest.handle(spoofed(9 + i), "van-bad").reason for i in range(6)]
    assert reasons == ["vehicle_mismatch"] * 5 + [THROTTLED]
    clock.now += 0.5  # a throttled van that behaves is read again, and loses nothing
    ack = ingest.handle(good("van-bad", 1), "van-bad")
    assert (ack.reason, [(r.first, r.last) for r in ack.stored]) == ("", [(1, 10)])
    assert held(db, "van-bad") == list(range(1, 11))
    # a good batch spends nothing: it is read again and again
    for n in range(10):
        assert ingest.handle(good("van-bad", 11 + 10 * n), "van-bad").reason == ""


def test_quarantined_batches_spend_the_budget(ingest: Ingest, clock: Clock) -> None:
    for i in range(5):
        body = [fix(10 * i + 1), pb.Record(seq=0, fix=pb.Fix(time_ms=T0)).SerializeToString()]
        ack = ingest.handle(wire.encode_batch("van-2", i, body), "van-2")
        assert not ack.rejected and [q.reason for q in ack.quarantined] == ["bad_seq"]
        assert [(r.first, r.last) for r in ack.stored] == [(10 * i + 1, 10 * i + 1)]
    assert ingest.handle(good("van-2", 100), "van-2").reason == THROTTLED


def test_unauthenticated_senders_are_budgeted_by_peer(ingest: Ingest) -> None:
    for _ in range(5):  # a plaintext peer claiming van-1 spends its own budget, not van-1's
        assert ingest.handle(b"\xff" * 64, "van-1", peer="ipv4:127.0.0.1:4000").rejected
    assert ingest.handle(good("van-1", 1), "van-1", peer="ipv4:127.0.0.1:4000").reason == THROTTLED
    ack = ingest.handle(good("van-1", 1), "van-1", peer="ipv4:127.0.0.1:4001")
    assert [(r.first, r.last) for r in ack.stored] == [(1, 10)]
    assert ingest.handle(good("van-1", 11), "van-1").reason == ""


def test_throttling_is_logged_once_when_it_starts(ingest: Ingest, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(5):
        ingest.handle(spoofed(i), "van-bad")
    with caplog.at_level(logging.WARNING, logger="dropline.collector"):
        for i in range(50):
            ingest.handle(spoofed(100 + i), "van-bad")
    starts = [r for r in caplog.records if "throttling van-bad" in r.getMessage()]
    assert len(starts) == 1
    assert ingest.rejects.counts[THROTTLED] == 50


def test_no_budget_never_throttles(db: Path, clock: Clock) -> None:
    store = SqliteStore(db)
    try:
        ingest = Ingest(store, monotonic=clock, budget=None)
        assert all(ingest.handle(spoofed(i), "van-bad").reason == "vehicle_mismatch" for i in range(300))
    finally:
        store.close()


def test_a_budget_must_be_spendable() -> None:
    with pytest.raises(ValueError):
        Budget(rate=0)
    with pytest.raises(ValueError):
        Budget(burst=0.5)
