"""Another process holding the write lock, wrong paths, real corruption, an old-schema file."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agent.outbox import Outbox
from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import ConfigError
from protocols.records import Alert, Fix, Record, Scan, Signal


def fix(i: int) -> Fix:
    return Fix(time=1_700_000_000 + i, mode=3, lat=48.1 + i * 1e-5, lon=11.5, speed=5.0, track=90.0)


def scan(i: int) -> Scan:
    return Scan(time=1_700_000_000 + i, raw=f"00340123450000{i:06d}", kind="sscc")


def committed(path: Path) -> dict[int, tuple[str, bytes]]:
    """What is in the file, read by a connection of our own (not the outbox's)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {s: (k, bytes(b)) for s, k, b in db.execute("SELECT seq, kind, body FROM records")}


class Holder:
    """A second real connection holding BEGIN EXCLUSIVE until released (a backup, sqlite3)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.locked = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.locked.wait(10)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        self.locked.set()
        self.release.wait(60)
        db.execute("COMMIT")
        db.close()


def test_write_lock_held_for_seconds_nothing_raises_every_record_lands(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, busy_timeout_s=0.5, retry_s=0.2)
    ob.append(fix(-1))
    ob.flush()
    holder = Holder(path)
    expected: dict[int, Record] = {}
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 4.0:  # the lock is held for 4 s while the van goes on
        record: Record = scan(i) if i % 20 == 0 else fix(i)
        expected[ob.append(record)] = record
        ob.tick()
        i += 1
        time.sleep(0.002)
    assert ob.stats.stalled == "outbox_locked"
    assert len(committed(path)) == 1  # nothing got in while the lock was held
    holder.release.set()
    holder.thread.join(10)
    deadline = time.monotonic() + 30
    while ob.stats.stalled and time.monotonic() < deadline:
        ob.tick()
        time.sleep(0.05)
    ob.flush()
    rows = committed(path)
    for seq, record in expected.items():
        assert rows.get(seq) == convert.encode_body(record), f"seq {seq} lost or changed"
    alerts = [pb.Alert.FromString(b) for k, b in rows.values() if k == "alert"]
    assert [a.code for a in alerts] == ["outbox_locked"]
    assert float(alerts[0].attrs["seconds"]) >= 3.0
    assert ob.stats.stalls == {"outbox_locked": 1}
    ob.close()


def test_lock_beyond_the_memory_cap_drops_oldest_telemetry_never_a_scan(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    now = [0.0]
    ob = Outbox(path, busy_timeout_s=0.05, retry_s=1.0, memory_cap_bytes=20_000, monotonic=lambda: now[0])
    holder = Holder(path)
    fixes, scans = [], []
    for i in range(3000):
        if i % 50 == 0:
            scans.append(ob.append(scan(i)))
        else:
            fixes.append(ob.append(Signal(time=1_700_000_000 + i, name="Vehicle.Speed", value=float(i))))
        now[0] += 0.01
        ob.tick()
    assert ob.stats.dropped_in_memory > 0
    holder.release.set()
    holder.thread.join(10)
    now[0] += 2
    ob.tick()
    rows = committed(path)
    assert set(scans) <= set(rows), "a scan was dropped"
    lost = set(fixes) - set(rows)
    kept = sorted(set(fixes) & set(rows))
    assert len(lost) == ob.stats.dropped_in_memory
    assert max(lost) < kept[0], "newer telemetry dropped before older"
    gaps = [pb.Gap.FromString(b) for k, b in rows.values() if k == "gap"]
    assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [(min(lost), max(lost), "outbox_locked")]
    ob.close()


def test_a_directory_is_a_config_error_not_moved_aside(tmp_path: Path) -> None:
    target = tmp_path / "outbox.db"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=re.escape(str(target))):
        Outbox(target)
    assert (target / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_a_parent_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ConfigError, match=re.escape("outbox.path")):
        Outbox(blocker / "sub" / "o.db")
    assert blocker.read_text() == "a file where a folder should be"


def test_a_missing_parent_is_created(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "a" / "b" / "o.db")
    assert ob.append(fix(0)) == 1
    ob.close()


def test_permission_denied_is_a_config_error(tmp_path: Path) -> None:
    """A read-only place (root ignores mode bits, so a read-only bind mount when root)."""
    import os
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    else:
        ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=re.escape(str(ro / "o.db"))):
            Outbox(ro / "o.db")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)
        ro.chmod(0o700)


def test_real_corruption_is_moved_aside_with_gap_and_alert(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    for i in range(2000):
        ob.append(fix(i))
    ob.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 4] = b"\xa5" * 8192  # b-tree pages overwritten: SQLITE_CORRUPT
    path.write_bytes(bytes(data))
    ob = Outbox(path)
    assert ob.stats.resets == 1
    assert len([p for p in tmp_path.glob("o.db.corrupt-*") if p.name.split("-")[-1].isdigit()]) == 1
    kinds = [k for _, _, k, _ in ob.rows()]
    assert kinds == ["gap", "alert"]
    ob.close()


OLD_SCHEMA = """
CREATE TABLE records (seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL,
                      acked INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def test_first_schema_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A file written by the previous release (body = whole pb.Record with its seq) opens,
    keeps every record and its ack state, and numbering continues."""
    path = tmp_path / "o.db"
    records: list[Record] = [
        fix(0),
        scan(1),
        Signal(1_700_000_002, "Vehicle.Speed", 3.5),
        Alert(1_700_000_003, "x"),
    ]
    records += [fix(i) for i in range(4, 5000)]
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(OLD_SCHEMA)
    db.execute("BEGIN")
    for seq, record in enumerate(records, start=1):
        acked = 1 if seq <= 2 else 2 if seq == 3 else 0
        old_body = convert.encode(seq, record)  # what the previous release stored: a whole pb.Record
        db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?)",
            (seq, int(not isinstance(record, Fix | Signal)), acked, old_body),
        )
    db.execute("INSERT INTO records VALUES (5001, 0, 0, ?)", (b"\xff\xff not protobuf",))
    db.execute("INSERT INTO meta VALUES ('last_seq', 5001)")
    db.execute("COMMIT")
    db.close()
    ob = Outbox(path)
    rows = {seq: (acked, kind, body) for seq, acked, kind, body in ob.rows()}
    for seq, record in enumerate(records, start=1):
        kind, body = convert.encode_body(record)
        acked = 1 if seq <= 2 else 2 if seq == 3 else 0
        assert rows[seq] == (acked, kind, body), seq
    assert rows[5001] == (0, "unknown", b"\xff\xff not protobuf")
    assert ob.append(fix(9)) == 5002
    tx = ob.batch(10)
    assert tx is not None and [r.seq for r in tx.records] == list(range(4, 14))
    ob.close()
