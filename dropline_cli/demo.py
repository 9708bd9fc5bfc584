"""``dropline demo``: one van against a local collector, on the embedded defaults.

Recorded data, replayed, not a live van: the agent reads a real drive through Munich (GPS
trace), a real Hyundai Kona Electric CAN log (decoded through its DBC and VSS mapping) and real
scanner strings, through the same drivers, core, SQLite outbox and gRPC uplink a van uses; the
collector stores them in SQLite. The demo then prints what the collector holds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from agent.config import (
    AgentConfig,
    CanConfig,
    GpsConfig,
    OutboxConfig,
    ScannerConfig,
    UplinkConfig,
    VehicleConfig,
)

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "examples" / "munich-drive.jsonl"
KONA = ROOT / "tests" / "data" / "can" / "kona_ev"
SCANS = ROOT / "tests" / "data" / "barcodes" / "scans_raw.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo-output"), help="where the two databases go"
    )
    parser.add_argument("--transport", choices=("grpc",), default="grpc", help="uplink (MQTT needs a broker)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: argparse.Namespace) -> int:
    from agent.runtime import Agent
    from cloud.collector import Collector

    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    addr = f"127.0.0.1:{_free_port()}"
    print("Dropline demo: RECORDED data replayed through the real agent and collector (not a live van).")
    print(f"  GPS:     {TRACE.relative_to(ROOT)} (a real 20-minute drive through Munich)")
    print(f"  CAN:     Hyundai Kona Electric log, decoded by {KONA.name}/pcan.dbc + the kona_ev VSS mapping")
    print(f"  scanner: {SCANS.relative_to(ROOT)} (GS1, SSCC and courier barcodes)")
    print(f"  collector: gRPC on {addr}, store {work / 'collector.db'}; agent outbox {work / 'outbox.db'}\n")

    config = AgentConfig(
        vehicle=VehicleConfig(id="demo-van-1"),
        outbox=OutboxConfig(path=work / "outbox.db"),
        uplink=UplinkConfig(transport="grpc", target=addr, insecure_local_test=True),
        gps=GpsConfig(driver="trace-file", path=TRACE, replay_interval_s=0.001),
        can=CanConfig(
            driver="can-log",
            dbc=KONA / "pcan.dbc",
            mapping="kona_ev",
            path=KONA / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log",
        ),
        scanner=ScannerConfig(driver="scan-file", path=SCANS, replay_interval_s=0.005),
    )
    with Collector(work / "collector.db", grpc_addr=addr) as hub:
        van = Agent(config)
        runner = threading.Thread(target=van.run, name="demo-agent")
        started = time.monotonic()
        runner.start()
        _wait_drained(van)
        van.stop_requested.set()
        runner.join()
        elapsed = time.monotonic() - started
        store = hub.store
        _report(store, van, elapsed)
    return 0


def _wait_drained(van: object, quiet_s: float = 1.5, limit_s: float = 120.0) -> None:
    """Until the replay is over and the collector has acknowledged everything."""
    from agent.runtime import Agent

    assert isinstance(van, Agent)
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        count = van.outbox.stats.appended
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > quiet_s and van.outbox.unacked_count() == 0:
            return


def _report(store: object, van: object, elapsed: float) -> None:
    from agent.runtime import Agent
    from cloud.store import SqliteStore

    assert isinstance(store, SqliteStore) and isinstance(van, Agent)
    kinds = Counter(row["kind"] for row in store.export("all"))
    progress = store.vehicles()[0].as_json()
    fixes = list(store.export("fixes"))
    soc = [r for r in store.export("signals") if r["signal"].endswith("StateOfCharge.Current")]
    scans = Counter(r["scan_kind"] for r in store.export("scans"))
    up = van.uplink.stats if van.uplink else None
    print(f"The collector stored {sum(kinds.values())} records of {progress['vehicle']} in {elapsed:.1f} s:")
    for kind, n in sorted(kinds.items()):
        print(f"  {kind:7} {n}")
    print(
        f"  complete up to seq {progress['contiguous']} of {progress['max_seq']}, "
        f"open gaps: {progress['open_gaps']}"
    )
    if fixes:
        a, b = fixes[0], fixes[-1]
        print(
            f"  drive: {a['time']} ({a['lat']:.5f}, {a['lon']:.5f}) -> "
            f"{b['time']} ({b['lat']:.5f}, {b['lon']:.5f})"
        )
    if soc:
        print(f"  traction battery state of charge: {soc[0]['value']:.1f} % ({len(soc)} readings)")
    print(f"  scans by kind: {dict(sorted(scans.items()))}")
    if up:
        print(
            f"  uplink: {up.batches_sent} batches, "
            f"{up.bytes_sent / max(1, up.records_sent):.1f} bytes/record on the wire"
        )
    _nmea_summary()
    print(f"\nSee it yourself: {_dropline()} export --db demo-output/collector.db --kind fixes | head")


def _dropline() -> str:
    """How to call ``dropline`` from here: the virtual environment's script when not on PATH."""
    script = Path(sys.executable).parent / "dropline"
    if shutil.which("dropline") or not script.exists():
        return "dropline"
    return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)


def _nmea_summary() -> None:
    """The serial-receiver path on a real capture: raw NMEA from a moving SiRF-II receiver."""
    from firmware_bridge.gps.serial_nmea import iter_fixes_from_file

    log = ROOT / "tests" / "data" / "nmea" / "gpsd" / "haicom-305N.log"
    fixes = list(iter_fixes_from_file(log))
    fast = max((f.speed or 0.0) for f in fixes) if fixes else 0.0
    print(
        f"  NMEA: {log.relative_to(ROOT)} decodes to {len(fixes)} fixes (one per receiver epoch), "
        f"top speed {fast:.1f} m/s"
    )
