"""What reaches the disk and when: fsync per priority commit, and the group-commit bound.

A power cut cannot be simulated honestly here (kill -9 keeps the page cache, drop_caches
writes dirty pages back first, device-mapper is not available in this container). What these
tests prove instead, at the boundary we own: the outbox asks the kernel to make its WAL
durable (fdatasync/fsync of ``o.db-wal``, seen with strace, after the record's bytes were
written to it) before ``append`` of a scan returns, and telemetry is made durable by the
``tick`` at which its oldest pending record turns ``group_commit_s`` old. They do not prove
that the storage honours the flush, nor SQLite's recovery of a torn WAL.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.outbox import Outbox
from protocols.records import Fix

ROOT = Path(__file__).resolve().parent.parent
STRACE = ["strace", "-f", "-y", "-e", "trace=write,pwrite64,fsync,fdatasync"]

WRITER = textwrap.dedent(
    """
    import os, sys
    from agent.outbox import Outbox
    from protocols.records import Fix, Scan
    now = [0.0]
    ob = Outbox(sys.argv[1], group_commit_s=1.0, monotonic=lambda: now[0])
    def mark(text):
        os.write(1, (text + "\\n").encode())
    for i in range(5):
        seq = ob.append(Scan(time=1.7e9 + i, raw=f"scan-payload-{i:04d}", kind="unknown"))
        mark(f"MARK scan {seq}")
    for i in range(50):  # telemetry inside the window: no commit, no sync
        now[0] = i * 0.01
        ob.append(Fix(time=1.7e9 + i, mode=3, lat=48.0, lon=11.0))
        ob.tick()
    mark("MARK window")
    now[0] = 1.0
    ob.tick()
    mark("MARK due")
    ob.close()
    """
)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_wal_is_synced_before_append_of_a_scan_returns(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    log = tmp_path / "strace.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(
        [*STRACE, "-o", str(log), sys.executable, "-c", WRITER, str(db)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    events: list[str] = []  # "wal-write", "wal-sync", or a MARK line, in syscall order
    for line in log.read_text().splitlines():
        if "MARK " in line and re.search(r"\bwrite\(1<", line):
            events.append(line[line.index("MARK") : line.index("\\n")])
        elif re.search(rf"pwrite64\(\d+<{re.escape(str(db))}-wal>", line):
            events.append("wal-write")
        elif re.search(rf"f(data)?sync\(\d+<{re.escape(str(db))}-wal>", line):
            events.append("wal-sync")
    scans = [e for e in events if e.startswith("MARK scan")]
    assert len(scans) == 5, events
    # before each scan's MARK: its bytes written to the WAL, then the WAL synced
    previous = 0
    for i, event in enumerate(events):
        if event.startswith("MARK"):
            since = events[previous:i]
            if event.startswith("MARK scan") or event == "MARK due":
                assert "wal-write" in since and "wal-sync" in since, (event, since)
                assert since.index("wal-write") < len(since) - 1 - since[::-1].index("wal-sync"), since
            elif event == "MARK window":
                assert "wal-sync" not in since, "telemetry synced record by record: no group commit"
            previous = i + 1


def committed_seqs(path: Path) -> set[int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {int(s) for (s,) in db.execute("SELECT seq FROM records")}


def test_group_commit_bound_with_telemetry_only(tmp_path: Path) -> None:
    """A fix every 10 ms (simulated), tick after each: at every tick, every fix appended at
    least group_commit_s ago is in the file (read by another connection), and the first one
    is not committed before its window is over."""
    now = [0.0]
    path = tmp_path / "o.db"
    ob = Outbox(path, group_commit_s=1.0, monotonic=lambda: now[0])
    appended: list[tuple[int, float]] = []
    commits_seen = 0
    last = -1
    for i in range(1000):  # 10 s of driving
        now[0] = round(i * 0.01, 2)
        appended.append((ob.append(Fix(time=1.7e9 + i, mode=3, lat=48.0, lon=11.0)), now[0]))
        ob.tick()
        stored = committed_seqs(path)
        due = [s for s, t in appended if t <= now[0] - 1.0]
        missing = [s for s in due if s not in stored]
        assert not missing, f"at t={now[0]}: {len(missing)} fixes older than the window not durable"
        if now[0] < 1.0:
            assert not stored, f"committed at t={now[0]}, before the window was over"
        if len(stored) != last:
            commits_seen += 1
            last = len(stored)
    assert 9 <= commits_seen <= 11, "not one group commit per second"
    ob.close()
