"""Which records the disk budget evicts, checked seq by seq: acknowledged history first, then
the oldest unacknowledged telemetry, never a scan or alert."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.outbox import Outbox
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import Fix, Scan


def fix(i: int) -> Fix:
    return Fix(time=1_700_000_000 + i, mode=3, lat=48.1 + i * 1e-5, lon=11.5, speed=5.0, track=90.0)


def used_bytes(path: Path) -> int:
    """Pages in use, read by a connection of our own."""
    with sqlite3.connect(path) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * size)


def setup(path: Path, n: int, acked_from: int) -> Outbox:
    """n fixes, the collector acknowledged the newest ones (acked_from..n), history kept."""
    ob = Outbox(path, retain_acked=10**9)
    for i in range(n):
        ob.append(fix(i))
    ob.flush()
    tx = ob.batch(n)
    assert tx is not None
    assert tx.accept([(acked_from, n)]) == n - acked_from + 1
    return ob


def test_acked_history_goes_first_and_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = setup(path, 20_000, 10_001)  # the acked rows are the newest: oldest-first alone would miss them
    ob.disk_budget_bytes = int(used_bytes(path) * 0.7)  # freeing ~37 % of pages is enough
    ob.append(fix(20_000))
    ob.flush()
    rows = {seq: acked for seq, acked, _, _ in ob.rows()}
    unacked = {s for s, a in rows.items() if a == 0}
    assert unacked == set(range(1, 10_001)) | {20_001}, (
        "unacked telemetry evicted while acked history was left"
    )
    assert ob.stats.evicted == 0 and ob.stats.gaps == []
    acked_left = sorted(s for s, a in rows.items() if a)
    assert acked_left and acked_left == list(range(acked_left[0], 20_001)), (
        "acked history not evicted oldest first"
    )
    ob.close()


def test_then_the_oldest_telemetry_never_a_scan(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, retain_acked=10**9)
    scans = []
    for i in range(20_000):
        if i % 1000 == 500:
            scans.append(ob.append(Scan(time=1_700_000_000 + i, raw=f"{i:018d}", kind="sscc")))
        else:
            ob.append(fix(i))
    ob.flush()
    tx = ob.batch(20_000)
    assert tx is not None
    tx.accept([(15_001, 20_000)])
    ob.disk_budget_bytes = int(used_bytes(path) * 0.5)  # more than the acked quarter must go
    ob.append(fix(20_000))
    ob.flush()
    rows = {seq: (acked, kind, body) for seq, acked, kind, body in ob.rows()}
    assert not [s for s, (a, _, _) in rows.items() if a], "acked history kept while telemetry was evicted"
    gaps = [(s, pb.Gap.FromString(b)) for s, (_, k, b) in rows.items() if k == "gap"]
    assert len(gaps) == 1
    gap_seq, gap = gaps[0]
    assert gap.reason == "disk_budget" and gap.from_seq == 1
    k = gap.to_seq
    assert 1 < k < 15_000
    # exactly: unacked scans, unacked fixes above k, the new fix and the gap record itself
    unacked_scans = {s for s in scans if s <= 15_000}
    expected = unacked_scans | set(range(k + 1, 15_001)) | {20_001, gap_seq}
    assert set(rows) == expected
    ob.close()
