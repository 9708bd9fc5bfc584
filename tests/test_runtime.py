"""The live shell (agent/runtime.py) with real drivers replaying real files into a real SQLite
outbox: event-time order, GNSS time for every reading, ticks on the corrected clock, a driver
that dies and is restarted, effects and documents recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load
from agent.core import Core, default_stages
from agent.events import CoreEvent
from agent.runtime import Agent
from agent.stages.base import Effect, StageOutput, VehicleState
from protocols.records import Scan, parse_iso_time
from tests.pipeline_fixtures import agent_config, outbox_records, wait_until

CASES = Path(__file__).parent / "cases"


class AskPerScan:
    """A stage asking the shell for one effect per scan."""

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        if isinstance(event, Scan):
            return StageOutput(effects=(Effect(event.time, "resequence", {"stop": event.raw}),))
        return StageOutput()


def config(tmp: Path) -> Path:
    sources = f"""
[gps]
driver = "trace-file"
path = "{CASES / "gps-gap" / "munich-gap.jsonl"}"

[scanner]
driver = "scan-file"
path = "{CASES / "drive" / "scans.txt"}"
"""
    return agent_config(tmp, "van-rt", "none", "", sources=sources)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Agent, Path]]:
    core = Core([*default_stages(gps_lost_s=1.0), AskPerScan()])
    van = Agent(
        load(config(tmp_path)),
        core=core,
        effect_handlers={"resequence": lambda e: {"order": e.args["stop"][::-1]}},
    )
    scanner = van.drivers[1]
    real_read = scanner._read
    failed: list[bool] = []

    def read_once_failing(timeout: float) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected bug")
        return real_read(timeout)

    scanner._read = read_once_failing  # type: ignore[method-assign]
    runner = threading.Thread(target=van.run, name="test-agent")
    runner.start()
    try:
        yield van, tmp_path / "outbox.db"
    finally:
        van.stop_requested.set()
        runner.join(30)
        assert not runner.is_alive()


def codes(db: Path) -> list[str]:
    return [r["code"] for r in outbox_records(db).values() if r["kind"] == "alert"]


def test_live_run_keeps_event_time_and_order_and_fires_timers(running: tuple[Agent, Path]) -> None:
    van, db = running
    # on GNSS time once a fix gave it (before, a document is stamped on the wall clock:
    # tests/test_live_route.py)
    wait_until(lambda: van.timebase.offset is not None, 30, "the first fix")
    van.submit_document("manifest", b"{}")
    wait_until(
        lambda: (
            {"gps_lost", "driver_restarted", "document_received"} <= set(codes(db))
            and codes(db).count("effect_result") == 12
        ),
        30,
        "gps_lost, the restart, the document and 12 effect results in the outbox",
    )
    van.stop_requested.set()
    time.sleep(0.1)
    records = outbox_records(db)
    fixes = [r for r in records.values() if r["kind"] == "fix"]
    trace = (CASES / "gps-gap" / "munich-gap.jsonl").read_text().splitlines()
    assert len(fixes) == len(trace)
    first, last = parse_iso_time(fixes[0]["time"]), parse_iso_time(fixes[-1]["time"])
    times = [parse_iso_time(r["time"]) for r in records.values() if "time" in r]
    # Every record is on the drive's GNSS time (2014), none on today's wall clock.
    assert all(first - 5 <= t <= last + 60 for t in times), (first, last, min(times), max(times))
    assert times == sorted(times)  # released in event-time order
    scans = [r for r in records.values() if r["kind"] == "scan"]
    assert len(scans) == 12  # the restart lost none
    restarted = [r for r in records.values() if r.get("code") == "driver_restarted"]
    assert restarted[0]["attrs"] == {"driver": "scanner", "restarts": "1"}
    results = sorted(r["attrs"]["order"] for r in records.values() if r.get("code") == "effect_result")
    assert results == sorted(s["raw"][::-1] for s in scans)
    lost = next(r for r in records.values() if r.get("code") == "gps_lost")
    assert lost["time"] == iso_after(fixes[-1]["time"], 1.0)


def iso_after(iso: str, seconds: float) -> str:
    from protocols.records import iso_time

    return iso_time(parse_iso_time(iso) + seconds)
