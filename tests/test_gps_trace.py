"""Bad lines in a trace or a gpsd JSON capture are counted and skipped, never fatal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from firmware_bridge.gps.tpv import read_trace
from protocols.rejects import Rejects

ROOT = Path(__file__).resolve().parent.parent
GOOD = [
    {"time": "2024-05-01T10:00:00Z", "lat": 48.1, "lon": 11.5},
    {"time": "2024-05-01T10:00:01Z", "lat": 48.2, "lon": 11.6, "altMSL": 520.0},
    {"time": "2024-05-01T10:00:02Z", "lat": -33.9, "lon": 151.2},
]


def test_trace_with_bad_lines_yields_every_good_fix(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    lines = [
        json.dumps(GOOD[0]),
        "garbage {{{",
        '{"time": "0001-01-01T00:00:00+14:00", "lat": 1, "lon": 2}',
        json.dumps(GOOD[1]),
        '{"time": "2024-05-01T10:00:03Z", "lat": NaN, "lon": 2}',
        '{"time": "2024-05-01T10:00:04Z", "lat": 91, "lon": 2}',
        "[1, 2]",
        json.dumps(GOOD[2]),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rejects = Rejects("trace")
    fixes = list(read_trace(path, rejects))
    assert [(f.lat, f.lon) for f in fixes] == [(g["lat"], g["lon"]) for g in GOOD]
    assert [f.mode for f in fixes] == [2, 3, 2]
    assert rejects.counts == {"bad_json": 1, "not_a_fix": 3, "not_object": 1}


def test_decode_gpsd_json_skips_unrepresentable_times(tmp_path: Path) -> None:
    path = tmp_path / "gpsd.json"
    good = {"class": "TPV", "mode": 3, "time": "2024-05-01T10:00:00.000Z", "lat": 48.1, "lon": 11.5}
    rows = [
        {"class": "TPV", "mode": 2, "time": "0001-01-01T00:00:00+14:00", "lat": 1.0, "lon": 2.0},
        {"class": "TPV", "mode": 2, "time": "1970-01-01T00:00:00Z", "lat": 1.0, "lon": 2.0},
        {"class": "TPV", "mode": 2, "time": "2024-13-01T00:00:00Z", "lat": 1.0, "lon": 2.0},
        good,
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "decode", "gps", "--format", "gpsd", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert out == [{"time": good["time"], "mode": 3, "lat": 48.1, "lon": 11.5}]
    assert "bad_tpv 3" in run.stderr
