"""A long soak: one agent at a van's load against a collector that is killed and restarted every
few minutes. Prints the agent's and the collector's resident memory over time and, at the end,
whether every record the agent committed is stored once.

    .venv/bin/python -m bench.soak --minutes 30 --kill-every-s 180 [--transport grpc|mqtt]

Load: the real Munich drive at 1 fix a second (repeated), the Kona Electric CAN log at about
20 frames a second, a scan every 20 seconds. Goal: flat memory after warm-up, nothing lost.
The growth figure is the least-squares slope of resident memory after the first two minutes.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.brokers import Mosquitto  # noqa: E402
from tests.pipeline_fixtures import (  # noqa: E402
    DATA,
    agent,
    agent_config,
    collector,
    export,
    free_port,
    wait_until,
)

KONA = DATA / "can" / "kona_ev"
SOURCES = f"""
[gps]
driver = "trace-file"
path = "{ROOT / "examples" / "munich-drive.jsonl"}"
replay_interval_s = 1.0
replay_repeat = 1000

[can]
driver = "can-log"
dbc = "{KONA / "pcan.dbc"}"
mapping = "kona_ev"
path = "{KONA / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"}"
replay_interval_s = 0.05

[scanner]
driver = "scan-file"
path = "{DATA / "barcodes" / "scans_raw.txt"}"
replay_interval_s = 20.0
"""


def unacked(outbox: Path) -> int:
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as ob:
        return int(ob.execute("SELECT count(*) FROM records WHERE acked = 0").fetchone()[0])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope_kb_per_s(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in KB/s."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 0.0 if var == 0 else sum((t - mt) * (m - mm) for t, m in samples) / var * 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--kill-every-s", type=float, default=180.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--transport", choices=("grpc", "mqtt"), default="grpc")
    args = parser.parse_args()
    with TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "collector.db"
        broker = None
        if args.transport == "grpc":
            port = free_port()
            target, start_collector = f"127.0.0.1:{port}", lambda: collector(tmp, db, grpc_port=port)
        else:
            broker = Mosquitto(tmp)
            broker.start()
            target, start_collector = broker.url, lambda: collector(tmp, db, mqtt_url=broker.url)
        config = agent_config(
            tmp, "van-soak", args.transport, target, sources=SOURCES, outbox={"retain_acked": 10_000_000}
        )
        hub = start_collector()
        van = agent(tmp, config)
        assert van.proc is not None
        started = time.monotonic()
        last_kill = started
        agent_mem: list[tuple[float, float]] = []
        print(f"{'t_s':>7} {'agent_MB':>9} {'collector_MB':>13}  kills")
        kills = 0
        try:
            while (now := time.monotonic()) - started < args.minutes * 60:
                if not van.alive():
                    raise RuntimeError(f"agent died:\n{van.tail()}")
                if now - last_kill >= args.kill_every_s:
                    hub.kill9()
                    kills += 1
                    time.sleep(2.0)
                    hub = start_collector()
                    last_kill = time.monotonic()
                t = now - started
                mem = rss_mb(van.proc.pid)
                agent_mem.append((t, mem))
                hub_mem = rss_mb(hub.proc.pid) if hub.proc and hub.alive() else 0.0
                print(f"{t:7.0f} {mem:9.1f} {hub_mem:13.1f}  {kills}", flush=True)
                time.sleep(args.sample_s)
            van.stop()
            # The same outbox, no sources: the agent only drains what is left.
            van = agent(tmp, agent_config(tmp, "van-soak", args.transport, target))
            wait_until(lambda: unacked(tmp / "outbox.db") == 0, 300, "the outbox drained")
            with sqlite3.connect(tmp / "outbox.db") as ob:
                committed = int(ob.execute("SELECT count(*) FROM records").fetchone()[0])
        finally:
            van.stop()
            hub.stop()
            if broker is not None:
                broker.stop()
        stored = sum(r["records"] for r in export(db, "vehicles"))
        warm = [(t, m) for t, m in agent_mem if t >= 120]
        print(f"\nagent resident: start {agent_mem[0][1]:.1f} MB, peak {max(m for _, m in agent_mem):.1f} MB")
        print(f"growth after warm-up: {slope_kb_per_s(warm):.2f} KB/s over {len(warm)} samples")
        print(f"committed {committed}, stored {stored}, collector killed {kills} times")
        return 0 if stored == committed else 1


if __name__ == "__main__":
    raise SystemExit(main())
