"""``dropline replay``: golden cases (tests/cases/), byte-identical output across runs and replay
speeds, the timed scan-file parser, and the merge/tick rules checked against the inputs."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import sources
from agent.config import AgentConfig, CanConfig, GpsConfig, ScannerConfig
from agent.replay import Replay, export_rows, load_config, with_ticks
from dropline_cli import main
from firmware_bridge.replay import parse_scan_line, read_scan_file
from firmware_bridge.scanner.lines import UnreadableLine
from protocols.records import Fix, Tick, iso_time, parse_iso_time
from protocols.rejects import Rejects

CASES = Path(__file__).parent / "cases"
REGENERATE = os.environ.get("DROPLINE_REGENERATE") == "1"


def replay_bytes(config: Path, tmp: Path, *extra: str) -> bytes:
    out = tmp / f"out-{len(list(tmp.iterdir()))}.jsonl"
    assert main(["replay", "--config", str(config), "-o", str(out), *extra]) == 0
    return out.read_bytes()


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_golden_case(case: str, tmp_path: Path) -> None:
    folder = CASES / case
    got = replay_bytes(folder / "agent.toml", tmp_path)
    expected = folder / "expected.jsonl"
    if REGENERATE:
        expected.write_bytes(got)
    assert got == expected.read_bytes(), f"{case}: output differs (DROPLINE_REGENERATE=1 to accept)"


def test_two_runs_in_two_processes_are_byte_identical(tmp_path: Path) -> None:
    """Separate processes: hash seeds and protobuf map order differ between them."""
    outs = []
    for n in range(2):
        out = tmp_path / f"{n}.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dropline_cli",
                "replay",
                "--config",
                str(CASES / "drive" / "agent.toml"),
                "-o",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 10_000


def test_replay_interval_does_not_change_the_output(tmp_path: Path) -> None:
    base = (CASES / "drive" / "agent.toml").read_text()
    outs = []
    for interval in (0.0, 0.25):
        text = base.replace("[gps]\n", f"[gps]\nreplay_interval_s = {interval}\n")
        text = text.replace("[can]\n", f"[can]\nreplay_interval_s = {interval}\n")
        text = text.replace("[scanner]\n", f"[scanner]\nreplay_interval_s = {interval}\n")
        config = CASES / "drive" / f".interval-{interval}.toml"  # relative paths need the folder
        config.write_text(text)
        try:
            outs.append(replay_bytes(config, tmp_path))
        finally:
            config.unlink()
    assert outs[0] == outs[1]


def rows(case: str) -> list[dict[str, object]]:
    return list(export_rows(Replay(load_config(CASES / case / "agent.toml")).records()))


def test_drive_case_against_its_inputs() -> None:
    """Fixes are the trace's, in order; scans the file's lines, laid out every 10 s from the first
    fix; CAN anchored at the first fix; seq 1.. in commit order; output in time order."""
    out = rows("drive")
    assert [r["seq"] for r in out] == list(range(1, len(out) + 1))
    trace = [json.loads(line) for line in (CASES / "drive" / "munich-3min.jsonl").read_text().splitlines()]
    fixes = [r for r in out if r["kind"] == "fix"]
    assert [(f["time"], f["lat"], f["lon"]) for f in fixes] == [
        (t["time"], round(t["lat"], 7), round(t["lon"], 7)) for t in trace
    ]
    first = parse_iso_time(trace[0]["time"])
    raw = (CASES / "drive" / "scans.txt").read_bytes().decode().split("\r\n")[:-1]
    scans = [r for r in out if r["kind"] == "scan"]
    assert [s["raw"] for s in scans] == raw
    assert [s["time"] for s in scans] == [iso_time(first + 10 * n) for n in range(1, 13)]
    signals = [r for r in out if r["kind"] == "signal"]
    first_frame = float((CASES / "drive" / "kona-pcan-2s.candump.log").read_text().split(")")[0][1:])
    assert signals[0]["t"] == first  # the first frame (1953.6135 s on the logger) falls on the first fix
    last_line = (CASES / "drive" / "kona-pcan-2s.candump.log").read_text().splitlines()[-1]
    assert float(signals[-1]["t"]) <= first + float(last_line.split(")")[0][1:]) - first_frame + 0.001
    times = [parse_iso_time(str(r["time"])) if "time" in r else float(str(r["t"])) for r in out]
    assert times == sorted(times)


def test_gps_gap_case_by_hand() -> None:
    alerts = [r for r in rows("gps-gap") if r["kind"] == "alert"]
    # last fix before the gap 04:54:26 (line 20 of the drive), first after it 04:54:52 (line 46)
    assert [(a["code"], a["time"]) for a in alerts] == [
        ("gps_lost", "2014-09-10T04:54:36.000Z"),
        ("gps_restored", "2014-09-10T04:54:52.000Z"),
    ]


def test_choices_of_the_configuration_are_the_driver_table() -> None:
    for section, cls in (("gps", GpsConfig), ("can", CanConfig), ("scanner", ScannerConfig)):
        field = next(f for f in dataclasses.fields(cls) if f.name == "driver")
        assert field.metadata["choices"] == tuple(sources.DRIVERS[section])


def test_a_live_driver_cannot_be_replayed() -> None:
    from agent.config import VehicleConfig
    from protocols.errors import InputError

    with pytest.raises(InputError, match="gps"):
        Replay(AgentConfig(vehicle=VehicleConfig(id="v"), gps=GpsConfig(driver="gpsd")))


def test_ticks_fill_whole_seconds_strictly_between_events() -> None:
    fixes = [Fix(10.5, 2, 0.0, 0.0), Fix(13.0, 2, 0.0, 0.0), Fix(12.0, 2, 0.0, 0.0), Fix(14.2, 2, 0.0, 0.0)]
    out = list(with_ticks(fixes))
    assert out == [fixes[0], Tick(11.0), Tick(12.0), fixes[1], fixes[2], Tick(14.0), fixes[3]]


@given(
    st.datetimes(min_value=datetime.datetime(1980, 1, 6), max_value=datetime.datetime(2100, 1, 1)),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
        lambda s: s.strip()
    ),
)
def test_timed_scan_line_round_trip(moment: datetime.datetime, raw: str) -> None:
    t = round(moment.replace(tzinfo=datetime.UTC).timestamp(), 3)
    line = parse_scan_line(f"{iso_time(t)}\t{raw}", 7)
    assert line.number == 7 and line.time == t and line.scan.time == t


@given(st.binary(max_size=300))
def test_scan_file_reader_never_raises_and_accounts_for_every_line(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("scan") / "scans.txt"
    path.write_bytes(data)
    rejects = Rejects("scanner")
    lines = list(read_scan_file(path, rejects))
    nonempty = [chunk for chunk in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n") if chunk]
    assert len(lines) + rejects.total == len(nonempty)


def test_a_tab_line_with_an_unreadable_time_is_rejected() -> None:
    with pytest.raises(UnreadableLine) as err:
        parse_scan_line("yesterday\t00000123", 3)
    assert err.value.reason == "bad_time"
    assert parse_scan_line("00000123", 3).time is None
