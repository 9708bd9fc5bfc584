"""A filesystem that is really full: eviction must run, never the agent die (reliability issue 2).

The outbox lives on a real 2 MiB tmpfs mounted by the fixture (root only, as here and in CI),
so SQLite gets real ENOSPC / SQLITE_FULL from the kernel, in commits and in its own deletes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.outbox import Outbox
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import Fix, Scan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A fresh 2 MiB tmpfs, unmounted afterwards."""
    mount = Path(tempfile.mkdtemp(prefix="outbox-fs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)
        mount.rmdir()


def fix(i: int) -> Fix:
    return Fix(time=1_700_000_000 + i, mode=3, lat=48.1 + i * 1e-5, lon=11.5, speed=5.0, track=90.0, sats=9)


def scan(i: int) -> Scan:
    return Scan(time=1_700_000_000 + i, raw=f"00340123450000{i:06d}", kind="sscc")


def fill(ob: Outbox, n: int) -> tuple[list[int], list[int]]:
    """Append n records, a scan every 25th, ticking as the shell does; return (fix, scan) seqs."""
    fixes: list[int] = []
    scans: list[int] = []
    for i in range(n):
        if i % 25 == 0:
            scans.append(ob.append(scan(i)))
        else:
            fixes.append(ob.append(fix(i)))
        if i % 100 == 0:
            ob.flush()
    ob.flush()
    return fixes, scans


def check_kept(ob: Outbox, fixes: list[int], scans: list[int]) -> None:
    rows = ob.rows()
    kept = {seq for seq, *_ in rows}
    assert set(scans) <= kept, f"{len(set(scans) - kept)} scans lost"
    gaps = [pb.Gap.FromString(body) for _, _, kind, body in rows if kind == "gap"]
    lost = set(fixes) - kept
    assert lost, "the filesystem never filled: the test proves nothing"
    assert all(g.reason in ("disk_full", "disk_budget") for g in gaps)
    covered = {s for g in gaps for s in range(g.from_seq, g.to_seq + 1)}
    assert lost <= covered, "evicted telemetry not reported by a gap"
    # oldest first: every evicted fix is older than every kept fix
    kept_fixes = sorted(set(fixes) & kept)
    assert kept_fixes, "every fix evicted"
    assert max(lost) < kept_fixes[0], "a newer fix was evicted while an older one was kept"


def test_full_disk_evicts_oldest_telemetry_keeps_every_scan(small_fs: Path) -> None:
    """Default budget (256 MiB) on a 2 MiB filesystem: only the filesystem's own limit acts."""
    ob = Outbox(small_fs / "o.db", reserve_bytes=128 << 10)
    fixes, scans = fill(ob, 60_000)
    assert ob.stats.disk_full > 0
    check_kept(ob, fixes, scans)
    ob.close()
    # and the file is still a sound database with everything it said it kept
    ob = Outbox(small_fs / "o.db", reserve_bytes=128 << 10)
    assert ob.stats.resets == 0
    check_kept(ob, fixes, scans)
    ob.close()


def test_budget_close_to_the_filesystem_size(small_fs: Path) -> None:
    """A budget the filesystem can barely hold: eviction runs for the budget and, when SQLite's
    own WAL and deletes need room the disk lacks, for the full disk too."""
    ob = Outbox(small_fs / "o.db", disk_budget_bytes=1_800_000, reserve_bytes=128 << 10)
    fixes, scans = fill(ob, 60_000)
    check_kept(ob, fixes, scans)
    ob.close()
