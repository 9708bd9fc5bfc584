"""The simulator's days through the real drivers into real agents, checked on what the agent
committed (its outbox) or the collector stored, against the day's plan (the independent truth):
the same day at scale 1 and scale 20 gives the same records, and each scenario gives the
records the real event would."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from dropline_cli.sim import EmbeddedCollector, run_fleet, uplink_body
from dropline_cli.simulator.day import Day, plan
from dropline_cli.simulator.play import play
from protocols.convert import from_body, to_json
from protocols.records import parse_iso_time

TIME_TOLERANCE_S = 1.0
"""Host- and arrival-stamped records (CAN, scans) at scale 20: a few ms of driver latency is 20
times as much GNSS time. Fix times come from the sentences and must be equal."""


def start() -> float:
    return float(int(time.time()) - 3600)


def outbox(folder: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(folder / "outbox.db") as db:
        rows = db.execute("SELECT seq, kind, body FROM records ORDER BY seq").fetchall()
    return [to_json(from_body(seq, kind, body)) for seq, kind, body in rows]


def alerts(records: list[dict[str, Any]]) -> list[str]:
    return [r["code"] for r in records if r["kind"] == "alert" and r["code"] != "document_received"]


def stops(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["stop"], r["status"]) for r in records if r["kind"] == "stop_update"]


def planned_scans(day: Day) -> list[str]:
    return [x for s in day.steps for x in s.scans]


def test_the_same_day_at_scale_1_and_20_gives_the_same_records(tmp_path: Path) -> None:
    day = plan("van-scale", start(), 1, leg_m=100, service_s=16)
    runs = {}
    for scale in (1.0, 20.0):
        play(day, tmp_path / str(scale), scale)
        runs[scale] = outbox(tmp_path / str(scale))
    slow, fast = runs[1.0], runs[20.0]
    last = day.steps[-1].t

    def when(r: dict[str, Any]) -> float:
        return float(r["t"]) if "t" in r else parse_iso_time(r["time"])

    in_day = lambda rs: [r for r in rs if when(r) <= last + 0.5]  # noqa: E731
    assert {r["kind"] for r in in_day(slow)} == {r["kind"] for r in in_day(fast)}
    assert stops(slow) == stops(fast) and ("S1", "completed") in stops(slow)
    assert alerts(slow) == alerts(fast) == []
    assert [r["raw"] for r in slow if r["kind"] == "scan"] == planned_scans(day)
    assert [r["raw"] for r in fast if r["kind"] == "scan"] == planned_scans(day)
    fix_times = lambda rs: [r["time"] for r in in_day(rs) if r["kind"] == "fix"]  # noqa: E731
    # the first epochs may be written before the driver has opened its port (serial drivers drop
    # a partial first line), so fixes are compared from the day's third second on
    begin = day.steps[0].t + 2
    assert [t for t in fix_times(slow) if parse_iso_time(t) >= begin] == [
        t for t in fix_times(fast) if parse_iso_time(t) >= begin
    ]
    for kind in ("scan", "delivery", "stop_update", "fence_event"):
        a = [parse_iso_time(r["time"]) for r in slow if r["kind"] == kind]
        b = [parse_iso_time(r["time"]) for r in fast if r["kind"] == kind]
        assert len(a) == len(b) and all(abs(x - y) <= TIME_TOLERANCE_S for x, y in zip(a, b, strict=True))
    # state of charge as planned, at both speeds: the CAN frames land on the day's GNSS time
    soc = lambda rs: [r for r in rs if str(r.get("signal", "")).endswith("StateOfCharge.Current")]  # noqa: E731
    planned = {round(s.t): s.soc_pct for s in day.steps}
    for r in soc(fast):
        t = round(when(r))
        if t in planned:
            assert abs(r["value"] - planned[t]) < 0.15


SCALE = 60.0


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("tunnel", "gps_lost"),
        ("extended-dwell", "extended_dwell"),
        ("scan-outside-fence", "scan_outside_fence"),
        ("wrong-stop", "parcel_wrong_stop"),
    ],
)
def test_scenario_raises_its_exception(tmp_path: Path, scenario: str, expected: str) -> None:
    day = plan("van-x", start(), 2, frozenset({scenario}), leg_m=150, service_s=20)
    play(day, tmp_path, SCALE)
    records = outbox(tmp_path)
    assert expected in alerts(records)
    plain = Path(tmp_path / "plain")
    play(plan("van-x", start(), 2, leg_m=150, service_s=20), plain, SCALE)
    assert expected not in alerts(outbox(plain))  # the scenario, not the day, raises it


def test_late_stop_is_reached_after_its_window(tmp_path: Path) -> None:
    day = plan("van-late", start(), 2, frozenset({"late-stop"}), leg_m=150, service_s=20)
    play(day, tmp_path, 300.0)
    records = outbox(tmp_path)
    window_end = {s["id"]: parse_iso_time(s["window"][1]) for s in day.manifest["stops"]}  # type: ignore[attr-defined]
    arrived = {r["stop"]: parse_iso_time(r["time"]) for r in records if r.get("status") == "arrived"}
    assert arrived["S1"] <= window_end["S1"] < arrived["S2"]


def test_battery_that_will_not_last(tmp_path: Path) -> None:
    day = plan("van-bat", start(), 2, frozenset({"battery"}), leg_m=150, service_s=20)
    play(day, tmp_path, SCALE)
    soc = [r["value"] for r in outbox(tmp_path) if str(r.get("signal", "")).endswith("StateOfCharge.Current")]
    assert soc and max(soc) < 10.0 and min(soc) <= day.steps[-1].soc_pct + 0.1 < max(soc)


def test_network_outage_loses_nothing(tmp_path: Path) -> None:
    day = plan("van-net", start(), 2, frozenset({"network-outage"}), leg_m=150, service_s=20)
    hub = EmbeddedCollector(tmp_path / "collector.db", None)
    hub.start()
    try:
        (van,) = run_fleet([day], tmp_path, SCALE, lambda v: uplink_body(hub.addr, v, None), hub.outage)
    finally:
        hub.stop()
    assert hub.outages == 1 and van.error == ""
    committed = {r["seq"]: r for r in outbox(van.folder)}
    with sqlite3.connect(tmp_path / "collector.db") as db:
        stored = [
            seq for (seq,) in db.execute("SELECT seq FROM records WHERE vehicle = 'van-net' ORDER BY seq")
        ]
    assert stored == sorted(committed)  # every record once, none missing


def test_agent_killed_and_restarted_keeps_every_scan_once(tmp_path: Path) -> None:
    day = plan("van-kill", start(), 2, frozenset({"agent-restart"}), leg_m=150, service_s=20)
    status = play(day, tmp_path, 20.0)
    assert status["exit"] == 0
    records = outbox(tmp_path)
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs))
    assert [r["raw"] for r in records if r["kind"] == "scan"] == planned_scans(day)
    assert day.restart_at is not None
    fixes = [parse_iso_time(r["time"]) for r in records if r["kind"] == "fix"]
    assert min(fixes) < day.restart_at - 10 and max(fixes) > day.restart_at + 10  # both agents ran
