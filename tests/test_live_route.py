"""The live van runs the route like ``dropline replay``: real file drivers into a real outbox,
compared with the replay CLI on the same inputs; a signed manifest swapped mid-route; documents
that do not wait for a first fix.

The inputs (independent truth from the case's README): the Munich drive cut at fix 1080, while
the van stands at stop S2 (halt at fixes 1031-1108), so it has passed S1 (a 70 s halt, no
delivery) and drives through S3 (no stop). Two S2 parcels and one stranger are scanned after the
last fix: the scanner starts only once every fix is in the outbox, so live and replay see the
scans at the same place whatever the threads' timing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import load
from agent.runtime import Agent
from agent.stages.geofence import GeofenceStage
from protocols import envelope
from protocols.records import iso_time, parse_iso_time
from tests.pipeline_fixtures import ROOT, agent_config, outbox_records, wait_until

CASE = ROOT / "tests" / "cases" / "route-day"
DRIVE = ROOT / "examples" / "munich-drive.jsonl"
CUT = 1080
ROUTE_KINDS = ("fence_event", "stop_update", "delivery")
FLEET = Ed25519PrivateKey.generate()


def inputs(tmp: Path, trusted: Path | None = None) -> Path:
    lines = DRIVE.read_text().splitlines()[:CUT]
    trace = tmp / "drive.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    last = parse_iso_time(json.loads(lines[-1])["time"])
    scans = tmp / "scans.txt"
    raws = ["43250701029999", "3114123456", "373400306809981733"]
    scans.write_text("".join(f"{iso_time(last + 20 + 10 * i)}\t{raw}\n" for i, raw in enumerate(raws)))
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps(json.loads((CASE / "manifest.json").read_text()) | {"vehicle": "van-r"}))
    sources = f"""
[gps]
driver = "trace-file"
path = "{trace}"

[scanner]
driver = "scan-file"
path = "{scans}"

[route]
manifest = "{manifest}"
"""
    if trusted is not None:
        sources += f'\n[documents]\ntrusted_keys = "{trusted}"\n'
    return agent_config(tmp, "van-r", "none", "", sources=sources)


def route_rows(rows: Any) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] in ROUTE_KINDS]


def replayed(config: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "replay", "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


class Live:
    """An Agent on its own thread, its scanner held back until every fix is in the outbox."""

    def __init__(self, config: Path, fixes: int) -> None:
        self.van = Agent(load(config))
        self.db = self.van.config.outbox.path
        scanner = self.van.drivers[1]
        start = scanner.start

        def start_after_the_drive(sink: Any) -> threading.Thread:
            def later() -> None:
                wait_until(lambda: self.count("fix") >= fixes, 60, "every fix in the outbox")
                start(sink)

            waiting = threading.Thread(target=later, daemon=True)
            waiting.start()
            return waiting

        scanner.start = start_after_the_drive  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.van.run, name="live-route")

    def count(self, kind: str) -> int:
        return sum(r["kind"] == kind for r in outbox_records(self.db).values())

    def rows(self) -> list[dict[str, Any]]:
        return list(outbox_records(self.db).values())

    def __enter__(self) -> Live:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.van.stop_requested.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return inputs(tmp_path)


def test_live_route_equals_replay(config: Path) -> None:
    expected = replayed(config)
    fixes = sum(r["kind"] == "fix" for r in expected)
    with Live(config, fixes) as live:
        wait_until(lambda: live.count("delivery") >= 2, 60, "two deliveries at S2")
        wait_until(lambda: live.count("stop_update") >= 5, 30, "S2 completed")
    rows = live.rows()
    # What the case's README says happens, checked on the replay (independent of the live shell)
    steps = [(r["stop"], r["status"]) for r in expected if r["kind"] == "stop_update"]
    assert steps == [
        ("S1", "arrived"),
        ("S1", "departed"),
        ("S2", "arrived"),
        ("S2", "serving"),
        ("S2", "completed"),
    ]
    parcels = [r["parcel"] for r in expected if r["kind"] == "delivery"]
    assert parcels == ["43250701029999", "373400306809981733"]
    # ... and the live van commits the same route records (times of the scans are live arrivals)
    strip = ("seq", "time")
    live_route = [{k: v for k, v in r.items() if k not in strip} for r in route_rows(rows)]
    replay_route = [{k: v for k, v in r.items() if k not in strip} for r in route_rows(expected)]
    assert live_route == replay_route
    fence_times = [r["time"] for r in route_rows(rows) if r["kind"] == "fence_event"]
    assert fence_times == [r["time"] for r in route_rows(expected) if r["kind"] == "fence_event"]
    manifest_status = [r for r in rows if r["kind"] == "document_status"]
    assert manifest_status[0]["document"] == "manifest:munich-2014-09-10"
    assert manifest_status[0]["time"] == next(r["time"] for r in expected if r["kind"] == "fix")


def signed_manifest(body: dict[str, Any], version: int, expires: float) -> bytes:
    return envelope.sign(
        json.dumps(body).encode(), [FLEET], kind="manifest", version=version, expires=expires, vehicle="van-r"
    )


def test_signed_manifest_swaps_the_route_without_a_pause(tmp_path: Path) -> None:
    """Mid-drive (after S1, before S2), a signed manifest moves S2's parcels to a new stop S9 at
    S2's place. The kept fences (depot, zones) keep their state; S2's progress stops; S9 is
    arrived at by the very fixes that follow, and the scans deliver at S9."""
    pem = tmp_path / "fleet.pem"
    pem.write_bytes(envelope.public_pem(FLEET.public_key()))
    config = inputs(tmp_path, trusted=pem)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for stop in manifest["stops"]:
        if stop["id"] == "S2":
            stop["id"] = "S9"
    lines = (tmp_path / "drive.jsonl").read_text().splitlines()
    swap_after = 768  # a chunk boundary of the replay driver: S1 departed (fix 479), S2 ahead (1031)
    gate = threading.Event()
    live = Live(config, CUT)
    gps = live.van.drivers[0]
    read = gps._read

    def paused_read(timeout: float) -> Any:  # installed before the driver starts
        if gps._pos >= swap_after and not gate.is_set():  # type: ignore[attr-defined]
            time.sleep(0.05)
            return ()
        return read(timeout)

    gps._read = paused_read  # type: ignore[method-assign]
    with live:
        wait_until(lambda: live.count("fix") >= swap_after, 60, "the drive up to the swap")
        now = parse_iso_time(json.loads(lines[swap_after - 1])["time"])
        live.van.submit_document("manifest", signed_manifest(manifest, 3, now + 86400))
        wait_until(
            lambda: any(r.get("applied") for r in live.rows() if r.get("document") == "manifest"),
            30,
            "the signed manifest applied",
        )
        gate.set()
        wait_until(lambda: live.count("delivery") >= 2, 60, "two deliveries")
        wait_until(lambda: live.count("stop_update") >= 5, 30, "S9 completed")
    rows = live.rows()
    statuses = [(r["document"], r["applied"]) for r in rows if r["kind"] == "document_status"]
    assert statuses == [
        ("manifest:munich-2014-09-10", True),
        ("manifest", True),
        ("manifest:munich-2014-09-10", True),
    ]
    steps = [(r["stop"], r["status"]) for r in rows if r["kind"] == "stop_update"]
    assert steps == [
        ("S1", "arrived"),
        ("S1", "departed"),
        ("S9", "arrived"),
        ("S9", "serving"),
        ("S9", "completed"),
    ]
    assert {r["stop"] for r in rows if r["kind"] == "delivery"} == {"S9"}
    assert live.van.status()["documents"] == {"manifest": {"version": 3, "applies": "now"}}
    assert (live.db.parent / "documents" / "manifest.envelope").exists()


def test_documents_do_not_wait_for_a_first_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No GNSS source at all: the time base never learns GNSS time, yet a signed configuration is
    checked, written and reported at once (on the wall clock, the best time there is), and the
    van says it is in force from the next restart."""
    pem = tmp_path / "fleet.pem"
    pem.write_bytes(envelope.public_pem(FLEET.public_key()))
    scans = tmp_path / "scans.txt"
    scans.write_text("43250701029999\n")
    sources = f'[scanner]\ndriver = "scan-file"\npath = "{scans}"\n\n[documents]\ntrusted_keys = "{pem}"\n'
    van = Agent(load(agent_config(tmp_path, "van-r", "none", "", sources=sources)))
    body = b'[vehicle]\nid = "van-r"\n[route]\nband_m = 12.0\n[uplink]\ninsecure_local_test = false\n'
    doc = envelope.sign(body, [FLEET], kind="config", version=4, expires=time.time() + 3600, vehicle="van-r")
    thread = threading.Thread(target=van.run)
    caplog.set_level("INFO", "dropline.agent")
    thread.start()
    try:
        before = time.time()
        van.submit_document("config", doc)
        db = van.config.outbox.path
        wait_until(
            lambda: any(r["kind"] == "document_status" for r in outbox_records(db).values()),
            30,
            "the configuration's status before any fix",
        )
        assert van.timebase.offset is None and van.timebase.held == 1  # the scan still waits
        (status,) = [r for r in outbox_records(db).values() if r["kind"] == "document_status"]
        assert status["applied"] is True and status["version"] == 4
        assert before - 1 <= parse_iso_time(status["time"]) <= time.time() + 1  # wall clock
        assert van.status()["documents"] == {"config": {"version": 4, "applies": "at the next restart"}}
        assert (db.parent / "documents" / "config.envelope").read_bytes() == doc
        assert any("applies at the next restart" in m for m in caplog.messages)
    finally:
        van.stop_requested.set()
        thread.join(30)
    # The next start: the signed [route] is in force, the local TLS choice is not the document's
    again = Agent(load(tmp_path / "agent.toml"))
    try:
        assert again.config.route.band_m == 12.0 and van.config.route.band_m != 12.0
        geofence = next(s for s in again.core.stages if isinstance(s, GeofenceStage))
        assert geofence.geofence.rules.band_m == 12.0
        assert again.config.uplink.insecure_local_test is True
    finally:
        again.outbox.close()
