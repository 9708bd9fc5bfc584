"""The outbox on real SQLite files: numbering, durability, budget, recovery, upload order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbox import Outbox, Transaction
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import Alert, Fix, Scan, Signal


def fix(i: int) -> Fix:
    return Fix(time=1_700_000_000 + i, mode=3, lat=48.1 + i * 1e-5, lon=11.5, speed=5.0, track=90.0)


def kinds(ob: Outbox) -> list[tuple[int, str]]:
    return [(seq, kind) for seq, _, kind, _ in ob.rows()]


def seqs(tx: Transaction | None) -> list[int]:
    return [] if tx is None else [r.seq for r in tx.records]


def drain(ob: Outbox, n: int) -> list[int]:
    """Every seq offered, batch after batch, the transactions left open."""
    out: list[int] = []
    while tx := ob.batch(n):
        out += seqs(tx)
    return out


def test_sequence_keeps_increasing_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    assert [ob.append(fix(i)) for i in range(3)] == [1, 2, 3]
    ob.close()
    ob = Outbox(path)
    assert ob.append(fix(3)) == 4
    # even when every row was acknowledged and pruned from the history
    ob.flush()
    tx = ob.batch(10)
    assert tx is not None
    assert tx.accept([(1, 4)]) == 4
    ob.retain_acked = 0
    ob.append(fix(4))
    ob.flush()
    ob.close()
    ob = Outbox(path)
    assert ob.append(fix(5)) == 6
    ob.close()


def test_priority_records_commit_at_once_telemetry_on_tick(tmp_path: Path) -> None:
    now = [0.0]
    ob = Outbox(tmp_path / "o.db", group_commit_s=1.0, monotonic=lambda: now[0])
    ob.append(fix(0))
    assert ob.batch(10) is None  # telemetry not committed yet: never sent before it is durable
    now[0] = 0.5
    ob.tick()
    assert ob.batch(10) is None
    now[0] = 1.0
    ob.tick()
    assert seqs(ob.batch(10)) == [1]
    ob.append(fix(1))
    ob.append(Scan(time=1_700_000_002, raw="00340123450000000000", kind="sscc"))
    assert seqs(ob.batch(10)) == [2, 3]  # the scan flushed the fix before it, in order
    ob.close()


def test_newest_first_sends_live_records_before_the_backlog(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", newest_first=True)
    for i in range(6):
        ob.append(fix(i))
    ob.flush()
    assert seqs(ob.batch(2)) == [6, 5]
    ob.append(fix(6))
    ob.flush()
    assert seqs(ob.batch(2)) == [7]
    assert seqs(ob.batch(2)) == [4, 3]
    assert seqs(ob.batch(10)) == [2, 1]
    assert ob.batch(10) is None
    ob.close()


def test_disk_budget_evicts_oldest_telemetry_never_priority_and_reports_gaps(tmp_path: Path) -> None:
    budget = 400_000
    ob = Outbox(tmp_path / "o.db", disk_budget_bytes=budget)
    priority: list[int] = []
    for i in range(40_000):
        if i % 1000 == 0:
            priority.append(ob.append(Alert(time=1_700_000_000 + i, code="test", message=f"alert {i}")))
        else:
            ob.append(Signal(time=1_700_000_000 + i, name="Vehicle.Speed", value=float(i)))
    ob.flush()
    assert ob.stats.evicted > 0
    rows = kinds(ob)
    kept = {s for s, _ in rows}
    assert set(priority) <= kept, "a priority record was evicted"
    gaps = [pb.Gap.FromString(b) for _, _, k, b in ob.rows() if k == "gap"]
    assert gaps and all(g.reason == "disk_budget" for g in gaps)
    # every missing seq is covered by a reported gap
    top = max(kept)
    missing = set(range(1, top + 1)) - kept
    covered = {s for g in gaps for s in range(g.from_seq, g.to_seq + 1)}
    assert missing <= covered
    page = os.path.getsize(tmp_path / "o.db")
    assert page <= budget * 1.5, page
    ob.close()


def test_corrupt_file_is_moved_aside_and_numbering_continues(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    for i in range(5):
        ob.append(fix(i))
    ob.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    ob = Outbox(path)
    assert ob.stats.resets == 1
    assert list(tmp_path.glob("o.db.corrupt-*"))
    rows = ob.rows()
    gap = next(pb.Gap.FromString(b) for _, _, k, b in rows if k == "gap")
    alert = next(pb.Alert.FromString(b) for _, _, k, b in rows if k == "alert")
    assert alert.code == "outbox_reset"
    assert gap.from_seq == 1 and gap.to_seq >= 5  # everything before is explained
    assert min(r[0] for r in rows) > 5  # no number is ever reused
    assert ob.append(fix(9)) > max(r[0] for r in rows)
    ob.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 10)), max_size=30))
def test_any_ack_sequence_leaves_exactly_the_unacked(acks: list[tuple[int, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ob = Outbox(Path(d) / "o.db")
        for i in range(50):
            ob.append(fix(i))
        ob.flush()
        acked: set[int] = set()
        for first, width in acks:
            tx = ob.batch(50)
            if tx is None:
                break
            tx.accept([(first, first + width)])  # only seqs of the transaction are marked
            acked |= set(range(first, first + width + 1)) & set(range(1, 51))
        ob.release_all()
        assert drain(ob, 7) == sorted(set(range(1, 51)) - acked)
        ob.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from agent.outbox import Outbox
    from protocols.records import Fix, Scan
    ob = Outbox(sys.argv[1], group_commit_s=1.0)
    i = 0
    while True:
        i += 1
        if i % 50 == 0:
            seq = ob.append(Scan(time=1.7e9 + i, raw=str(i), kind="unknown"))
        else:
            seq = ob.append(Fix(time=1.7e9 + i, mode=3, lat=48.0, lon=11.0))
        ob.tick()
        print(seq, time.monotonic(), flush=True)
        time.sleep(0.002)
    """
)


def test_power_loss_bound_kill_9_loses_at_most_the_group_commit_window(tmp_path: Path) -> None:
    """kill -9 drops what is only in memory: that is the telemetry of the last ~second, and
    never a scan (priority) that ``append`` returned for."""
    path = tmp_path / "o.db"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    for delay in (1.7, 2.9):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        printed = [(int(s), float(t)) for s, t in (line.split() for line in out.splitlines() if line.strip())]
        killed_at = printed[-1][1]
        ob = Outbox(path)
        stored = {s for s, _, _, _ in ob.rows()}
        ob.close()
        # every scan that was reported appended is there
        scans = [s for s, _ in printed if s % 50 == 0]
        # (seq numbering continues across runs, so compare by membership, not position)
        lost_scans = [s for s in scans if s not in stored]
        assert not lost_scans
        old_enough = [s for s, t in printed if t <= killed_at - 1.0 - 0.5]
        missing_old = [s for s in old_enough if s not in stored]
        assert not missing_old, f"{len(missing_old)} records older than the commit window were lost"
