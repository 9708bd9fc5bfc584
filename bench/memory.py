"""The agent's resident memory against its budget (40 MB, DESIGN.md "On the van").

In one run, on the same machine:

1. ``dropline agent`` as a subprocess with every driver kind on file replay (NMEA log through the
   NMEA decoder, the Kona Electric CAN log through its DBC and VSS mapping, scanner lines) and the
   gRPC uplink to a local ``dropline collector``: VmHWM and VmRSS sampled from
   ``/proc/<pid>/status`` while it runs; the peak resident MB;
2. the import cost of each heavy module, each imported alone in a fresh interpreter (VmHWM
   after the import, and the difference to a bare interpreter), and ``python -X importtime``'s
   top entries for what ``dropline agent`` imports;
3. tracemalloc's top allocators (by file) in an agent after warm-up (Python allocations only:
   what grpc's core or SQLite allocate in C is not seen there, but is in VmRSS).

    .venv/bin/python -m bench.memory [--seconds 20] [--top 15]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pipeline_fixtures import Proc, collector, free_port  # noqa: E402

BUDGET_MB = 40.0
DATA = ROOT / "tests" / "data"
KONA = DATA / "can" / "kona_ev"

# Module -> what it is; each imported alone in a fresh interpreter.
MODULES = {
    "": "bare interpreter",
    "grpc": "grpcio (the collector's server; no van loads it)",
    "h2.connection": "h2 (the van's gRPC uplink)",
    "google.protobuf": "protobuf runtime",
    "protocols.dropline.v1.dropline_pb2": "our generated schema (the collector's; no van loads it)",
    "paho.mqtt.client": "paho-mqtt (MQTT uplink)",
    "cantools": "cantools (DBC)",
    "cantools.database": "cantools' database alone (its package __init__ still imports python-can)",
    "can": "python-can",
    "pynmea2": "pynmea2",
    "serial": "pyserial",
    "biip": "biip (GS1)",
    "sqlite3": "sqlite3",
    "agent.config": "our config loader",
    "dropline_cli.agent": "the agent subcommand module",
    "agent.runtime": "our agent runtime (outbox, core, uplink)",
    "agent.transport_grpc": "our gRPC transport (h2)",
    "agent.transport_mqtt": "our MQTT transport (paho)",
    "protocols.downlink": "our hand downlink decoder (no protobuf)",
    "protocols.ed25519": "our signature check over the loaded OpenSSL (no cryptography)",
    "cryptography.hazmat.primitives.asymmetric.ed25519": "cryptography's ed25519 (signing side only)",
    "firmware_bridge.gps.serial_nmea": "our NMEA driver",
    "firmware_bridge.can.bus_driver": "our CAN driver",
    "firmware_bridge.can.socketcan": "our stdlib SocketCAN reader (no python-can)",
    "firmware_bridge.can.decoder": "our CAN decoder over the compiled DBC table (no cantools)",
    "protocols.body_encoder": "our hand body encoder (no protobuf)",
    "agent.outbox": "our outbox (encodes with the hand encoder)",
    "firmware_bridge.scanner.serial_scanner": "our scanner driver",
}


def config_text(tmp: Path, port: int) -> str:
    """Every driver kind replaying a real capture, played again and again so the run stays busy."""
    return f"""
[vehicle]
id = "van-mem"

[outbox]
path = "{tmp / "outbox.db"}"

[uplink]
transport = "grpc"
target = "127.0.0.1:{port}"
insecure_local_test = true

[gps]
driver = "nmea-file"
path = "{DATA / "nmea" / "gpsd" / "quectel-l76k-nmea.log"}"
replay_interval_s = 0.002
replay_repeat = 1000

[can]
driver = "can-log"
dbc = "{KONA / "pcan.dbc"}"
mapping = "kona_ev"
path = "{KONA / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"}"
replay_interval_s = 0.0005

[scanner]
driver = "scan-file"
path = "{DATA / "barcodes" / "scans_raw.txt"}"
replay_interval_s = 0.01
"""


def status_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident) and VmRSS (resident now) of ``pid``, in MB (10^6 bytes)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024 / 1e6
    return out


def run_agent(seconds: float) -> dict[str, float]:
    """Peak and final resident MB of a running ``dropline agent`` with every driver and gRPC."""
    with tempfile.TemporaryDirectory(prefix="dropline-mem-") as folder:
        tmp = Path(folder)
        port = free_port()
        hub = collector(tmp, tmp / "collector.db", grpc_port=port)
        config = tmp / "agent.toml"
        config.write_text(config_text(tmp, port))
        van = Proc(["agent", "--config", str(config)], tmp / "agent.log").start()
        assert van.proc is not None
        samples: list[dict[str, float]] = []
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if not van.alive():
                    raise SystemExit(f"agent exited early:\n{van.tail()}")
                samples.append(status_mb(van.proc.pid))
                time.sleep(0.05)
            final = status_mb(van.proc.pid)
        finally:
            van.stop()
            hub.stop()
        with sqlite3.connect(tmp / "collector.db") as db:
            stored = int(db.execute("SELECT count(*) FROM records").fetchone()[0])
    return {
        "peak_hwm_mb": final["VmHWM"],
        "max_rss_mb": max(s["VmRSS"] for s in samples),
        "final_rss_mb": final["VmRSS"],
        "stored": stored,
    }


def import_cost(module: str) -> float:
    """VmHWM in MB of a fresh interpreter after importing only ``module``."""
    code = (f"import {module}\n" if module else "") + (
        "for l in open('/proc/self/status'):\n"
        "    if l.startswith('VmHWM:'): print(int(l.split()[1]) * 1024 / 1e6)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return float(out.stdout)


def importtime(top: int) -> list[tuple[int, str]]:
    """``python -X importtime``: the modules with the largest cumulative import time (us)."""
    code = (
        "import dropline_cli.agent, agent.runtime, agent.transport_grpc, firmware_bridge.gps.serial_nmea,"
        " firmware_bridge.can.bus_driver, firmware_bridge.scanner.serial_scanner, cantools, can"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith("  "):  # top-level imports only (a nested one counts inside its parent)
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:top]


def tracemalloc_child(config: Path, warmup_s: float, top: int) -> None:
    """In a child process: an agent with tracemalloc on, its top allocators after warm-up."""
    tracemalloc.start(1)
    from agent.config import load
    from agent.runtime import Agent

    agent = Agent(load(config))
    runner = threading.Thread(target=agent.run, name="agent")
    runner.start()
    time.sleep(warmup_s)
    snapshot = tracemalloc.take_snapshot()
    agent.stop_requested.set()
    runner.join(30)
    stats = snapshot.statistics("filename")
    total = sum(s.size for s in stats)
    print(f"  traced Python allocations: {total / 1e6:.1f} MB in {len(stats)} files")
    for s in stats[:top]:
        name = str(s.traceback[0].filename)
        for prefix in (str(ROOT) + "/", sys.prefix + "/"):
            name = name.removeprefix(prefix)
        print(f"  {s.size / 1e6:7.2f} MB {s.count:8d} blocks  {name}")


def run_tracemalloc(warmup_s: float, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dropline-mem-") as folder:
        tmp = Path(folder)
        port = free_port()
        hub = collector(tmp, tmp / "collector.db", grpc_port=port)
        config = tmp / "agent.toml"
        config.write_text(config_text(tmp, port))
        try:
            child = ["--tracemalloc-child", str(config), str(warmup_s), "--top", str(top)]
            subprocess.run(
                [sys.executable, "-m", "bench.memory", *child],
                check=True,
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
        finally:
            hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the agent runs")
    parser.add_argument("--top", type=int, default=15, help="rows of the importtime and tracemalloc tables")
    parser.add_argument(
        "--tracemalloc-child", nargs=2, metavar=("CONFIG", "WARMUP_S"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.tracemalloc_child:
        tracemalloc_child(Path(args.tracemalloc_child[0]), float(args.tracemalloc_child[1]), args.top)
        return

    print(f"1. dropline agent, every driver on file replay, gRPC uplink, {args.seconds:.0f} s")
    r = run_agent(args.seconds)
    verdict = "within" if r["peak_hwm_mb"] <= BUDGET_MB else "OVER"
    print(
        f"  peak resident (VmHWM) {r['peak_hwm_mb']:.1f} MB, largest VmRSS sample {r['max_rss_mb']:.1f} MB,"
        f" at the end {r['final_rss_mb']:.1f} MB; budget {BUDGET_MB:.0f} MB: {verdict}"
    )
    print(f"  records the collector stored meanwhile: {r['stored']}")

    print("\n2. import cost, each alone in a fresh interpreter (VmHWM MB; + over a bare interpreter)")
    bare = import_cost("")
    for module, what in MODULES.items():
        mb = bare if not module else import_cost(module)
        print(f"  {mb:6.1f}  {mb - bare:+6.1f}  {module or '(none)':40s} {what}")

    print(f"\n   python -X importtime, what the agent with every driver imports: top {args.top} (cumulative)")
    for us, name in importtime(args.top):
        print(f"  {us / 1000:8.1f} ms  {name}")

    print(f"\n3. tracemalloc top {args.top} files after 10 s of warm-up (an agent in a child process)")
    run_tracemalloc(10.0, args.top)


if __name__ == "__main__":
    main()
