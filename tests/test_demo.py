"""A shortened ``dropline demo`` (2 vans at scale 200, through TLS): its printed summary agrees
with what the collector's store holds, read independently with sqlite3, and the report exists."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path


def test_short_demo_summary_matches_the_store(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dropline_cli", "demo", "--vans", "2", "--stops", "2", "--scale", "200"]
    out = subprocess.run([*cmd, "--workdir", str(work)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    with sqlite3.connect(work / "collector.db") as db:
        stored = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        deliveries = db.execute("SELECT COUNT(*) FROM records WHERE kind = 'delivery'").fetchone()[0]
    committed = 0
    for van in ("van-01", "van-02"):
        with sqlite3.connect(work / van / "outbox.db") as db:
            committed += db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    m = re.search(r"records committed by the vans (\d+), stored (\d+), lost (\d+)", out.stdout)
    assert m, out.stdout
    assert (int(m[1]), int(m[2]), int(m[3])) == (committed, stored, 0)
    assert f"proofs of delivery: {deliveries} of 8 parcels" in out.stdout
    assert deliveries >= 6  # van-02's wrong-stop / outside-fence scans are exceptions, not PODs
    assert "mutual" in out.stdout.lower() or "TLS" in out.stdout
    report = work / "report.html"
    assert report.exists() and "<svg" in report.read_text()
