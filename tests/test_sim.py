"""The simulator: each scenario changes the planned day as the real event would (checked on the
timeline against hand-computed expectations), and a short day played through the real drivers
(NMEA pty, python-can virtual bus with DBC-encoded frames, scanner pty) reaches the agent's outbox:
every scan exactly, state of charge as planned, fixes at the planned positions."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from dropline_cli.simulator.day import SCENARIOS, plan, sscc
from dropline_cli.simulator.play import play
from protocols.convert import from_body, to_json

START = 1_780_000_000.0


def test_sscc_check_digit_is_gs1s() -> None:
    # GS1 mod 10: weights 3, 1, 3... from the right over the 17 digits.
    body = "04012340000000101"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    assert sscc(101) == body + str((10 - total % 10) % 10)
    assert len(sscc(1)) == 18


def test_plain_day() -> None:
    day = plan("v", START, 3)
    assert [s.t for s in day.steps] == [START + i for i in range(len(day.steps))]
    assert all(s.position is not None for s in day.steps)
    scans = [x for s in day.steps for x in s.scans]
    parcels = [p for stop in day.manifest["stops"] for p in stop["parcels"]]  # type: ignore[attr-defined]
    assert scans == parcels
    assert 0 < day.steps[-1].soc_pct < day.steps[0].soc_pct


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_changes_the_day(scenario: str) -> None:
    base = plan("v", START, 3)
    day = plan("v", START, 3, frozenset({scenario}))
    scans = [x for s in day.steps for x in s.scans]
    parcels = [p for stop in day.manifest["stops"] for p in stop["parcels"]]  # type: ignore[attr-defined]
    if scenario == "tunnel":
        # the second leg: 600 m * 1.3 at 10 m/s = 78 epochs, dark from its 5th to its 64th
        assert sum(1 for s in day.steps if s.position is None) == 60
    elif scenario == "network-outage":
        assert day.outage is not None and START < day.outage[0] < day.outage[1] < day.steps[-1].t
    elif scenario == "late-stop":
        assert len(day.steps) == len(base.steps) + 1200
    elif scenario == "extended-dwell":
        assert len(day.steps) == len(base.steps) + 4 * 60
    elif scenario == "scan-outside-fence":
        assert sorted(scans) == sorted(parcels)
        assert day.steps[[i for i, s in enumerate(day.steps) if s.scans][-1]].scans != ()
    elif scenario == "wrong-stop":
        assert sorted(scans) == sorted(parcels) and scans.index(parcels[0]) > scans.index(parcels[2])
    elif scenario == "battery":
        assert day.steps[0].soc_pct < 10 and day.steps[-1].soc_pct < day.steps[0].soc_pct - 1
    elif scenario == "agent-restart":
        assert day.restart_at is not None and START < day.restart_at < day.steps[-1].t


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="tunel"):
        plan("v", START, 1, frozenset({"tunel"}))


def test_a_short_day_through_the_real_drivers(tmp_path: Path) -> None:
    day = plan("van-sim", float(int(time.time())), 1, leg_m=120, service_s=12)
    play(day, tmp_path, scale=10.0)
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        rows = db.execute("SELECT seq, kind, body FROM records ORDER BY seq").fetchall()
    records = [to_json(from_body(seq, kind, body)) for seq, kind, body in rows]
    scans = [r["raw"] for r in records if r["kind"] == "scan"]
    assert scans == [x for s in day.steps for x in s.scans]
    socs = {
        round(r["value"], 1) for r in records if str(r.get("signal", "")).endswith("StateOfCharge.Current")
    }
    assert socs and socs <= {round(s.soc_pct, 1) for s in day.steps}
    planned = {(round(s.position.lat, 5), round(s.position.lon, 5)) for s in day.steps if s.position}
    fixes = [r for r in records if r["kind"] == "fix"]
    assert len(fixes) >= len(day.steps) // 2
    assert {(round(f["lat"], 5), round(f["lon"], 5)) for f in fixes} <= planned
