"""Draining a depot's offline backlog: 1,000,000 fixes from the outbox to a local collector.

In one run, on the same machine:

1. outbox append throughput with group commit (the agent's side of a 1 Hz GPS, fed flat out),
   and the latency from a delivery scan's ``append`` to its durable (fsync'd) commit;
2. the backlog drained over each uplink (gRPC stream; MQTT through Mosquitto) to a
   ``dropline collector`` process storing into SQLite, every record acknowledged end to end:
   fixes per second stored end to end and bytes per fix on the wire;
3. the usual approach on the same fixes: one JSON message per fix, published with paho at QoS 1,
   to a collector inserting row by row (a sample of ``--peer-fixes``; its rate does not depend on
   the backlog's size); and the ratio.

    .venv/bin/python -m bench.uplink [--fixes 1000000] [--peer-fixes 20000]

Goals (2 cores): >= 50,000 fixes/s end to end, >= 20x the usual approach, >= 20,000 appends/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.outbox import Outbox  # noqa: E402
from agent.uplink import Backoff, Uplink  # noqa: E402
from protocols.records import Fix, Scan  # noqa: E402
from tests.brokers import run_mosquitto  # noqa: E402
from tests.pipeline_fixtures import Proc, free_port, load_barefoot, wait_port  # noqa: E402

VEHICLE = "van-bench"


def backlog(n: int) -> list[Fix]:
    """The real Munich drive, played again and again (shifted in time) up to ``n`` fixes."""
    drive = load_barefoot()
    span = drive[-1].time - drive[0].time + 1
    return [
        dataclasses.replace(drive[i % len(drive)], time=drive[i % len(drive)].time + (i // len(drive)) * span)
        for i in range(n)
    ]


def fill_outbox(path: Path, fixes: list[Fix]) -> dict[str, float]:
    ob = Outbox(path, disk_budget_bytes=1 << 32, group_commit_s=1.0)
    start = time.perf_counter()
    for fix in fixes:
        ob.append(fix)
        ob.tick()
    ob.flush()
    append_s = time.perf_counter() - start
    latencies = []
    for i in range(200):
        t = time.perf_counter()
        ob.append(Scan(time=fixes[-1].time + i, raw="00340123450000000000", kind="sscc"))
        latencies.append(time.perf_counter() - t)
    ob.close()
    latencies.sort()
    return {
        "append_per_s": len(fixes) / append_s,
        "scan_commit_ms_median": statistics.median(latencies) * 1000,
        "scan_commit_ms_p99": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def drain(outbox_path: Path, transport: Any, total: int) -> dict[str, float]:
    ob = Outbox(outbox_path, disk_budget_bytes=1 << 32, retain_acked=0)
    uplink = Uplink(
        ob,
        transport,
        VEHICLE,
        window=8,
        batch_records=5000,
        batch_bytes=2 << 20,
        compress=True,
        ack_timeout_s=30,
        backoff=Backoff(0.05, 0.5),
    )
    start = time.perf_counter()
    uplink.start()
    while uplink.stats.records_acked < total:  # cheap: no query racing the uplink for the outbox
        time.sleep(0.01)
        if time.perf_counter() - start > 600:
            raise TimeoutError("backlog not drained in 10 minutes")
    elapsed = time.perf_counter() - start
    uplink.stop()
    assert ob.unacked_count() == 0
    ob.close()
    return {
        "records": total,
        "seconds": elapsed,
        "fixes_per_s": total / elapsed,
        "wire_bytes_per_fix": uplink.stats.bytes_sent / max(1, uplink.stats.records_sent),
        "batches": uplink.stats.batches_sent,
        "resent_records": uplink.stats.records_sent - total,
    }


def stored(db: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "export", "--db", str(db), "--kind", "vehicles"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return sum(r["records"] for r in rows)


def ours(tmp: Path, prefilled: Path, total: int, which: str) -> dict[str, float]:
    from agent.transport_grpc import GrpcTransport
    from agent.transport_mqtt import MqttTransport

    work = tmp / which
    work.mkdir()
    for src in prefilled.parent.glob(prefilled.name + "*"):
        shutil.copy(src, work / src.name)
    db = work / "collector.db"
    factory: Any
    if which == "grpc":
        port = free_port()
        hub = Proc(
            ["collector", "--db", str(db), "--grpc", f"127.0.0.1:{port}"], work / "collector.log"
        ).start()
        wait_port(port)
        factory = lambda: GrpcTransport(f"127.0.0.1:{port}")  # noqa: E731
        try:
            result = drain(work / prefilled.name, factory, total)
        finally:
            hub.stop()
    else:
        with run_mosquitto(work) as broker:
            hub = Proc(["collector", "--db", str(db), "--mqtt", broker.url], work / "collector.log").start()
            time.sleep(1.0)
            factory = lambda: MqttTransport(broker.url, VEHICLE, window=8)  # noqa: E731
            try:
                result = drain(work / prefilled.name, factory, total)
            finally:
                hub.stop()
    result["stored"] = stored(db)
    return result


PEER_COLLECTOR = """
import json, sqlite3, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
db = sqlite3.connect(sys.argv[1], check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE fixes (vehicle TEXT, seq INTEGER, time TEXT, lat REAL, lon REAL, "
           "PRIMARY KEY (vehicle, seq))")
def on_message(client, userdata, msg):
    fix = json.loads(msg.payload)
    db.execute("INSERT OR IGNORE INTO fixes VALUES (?, ?, ?, ?, ?)",
               (fix["vehicle"], fix["seq"], fix["time"], fix["lat"], fix["lon"]))
    db.commit()
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="peer-collector")
c.on_connect = lambda c, u, f, r, p: c.subscribe("peer/+/fix", qos=1)
c.on_message = on_message
c.connect("127.0.0.1", int(sys.argv[2]))
print("ready", flush=True)
c.loop_forever()
"""


def peer(tmp: Path, fixes: list[Fix]) -> dict[str, float]:
    """The usual approach: a JSON message per fix, QoS 1, inserted row by row on arrival."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from protocols.records import iso_time

    work = tmp / "peer"
    work.mkdir()
    db = work / "peer.db"
    with run_mosquitto(work) as broker:
        hub = subprocess.Popen(
            [sys.executable, "-c", PEER_COLLECTOR, str(db), str(broker.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert hub.stdout is not None and hub.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="peer-van")
        client.connect(broker.host, broker.port)
        client.loop_start()
        wire_bytes = 0
        topic = f"peer/{VEHICLE}/fix"
        start = time.perf_counter()
        for seq, fix in enumerate(fixes, start=1):
            payload = json.dumps(
                {"vehicle": VEHICLE, "seq": seq, "time": iso_time(fix.time), "lat": fix.lat, "lon": fix.lon}
            )
            wire_bytes += len(payload) + len(topic) + 6  # PUBLISH fixed header, topic length, packet id
            client.publish(topic, payload, qos=1)
        while True:
            with sqlite3.connect(db) as con:
                n = con.execute("SELECT count(*) FROM fixes").fetchone()[0]
            if n >= len(fixes):
                break
            if time.perf_counter() - start > 600:
                raise TimeoutError("peer did not finish in 10 minutes")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        client.loop_stop()
        client.disconnect()
        hub.terminate()
        hub.wait(10)
    return {
        "records": len(fixes),
        "seconds": elapsed,
        "fixes_per_s": len(fixes) / elapsed,
        "wire_bytes_per_fix": wire_bytes / len(fixes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fixes", type=int, default=1_000_000)
    parser.add_argument("--peer-fixes", type=int, default=20_000)
    parser.add_argument("--transports", default="grpc,mqtt")
    args = parser.parse_args(argv)
    fixes = backlog(args.fixes)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dropline-bench-") as d:
        tmp = Path(d)
        prefilled = tmp / "outbox.db"
        results["outbox"] = fill_outbox(prefilled, fixes)
        o = results["outbox"]
        print(
            f"outbox: {o['append_per_s']:,.0f} appends/s with group commit (goal >= 20,000); "
            f"scan -> durable commit median {o['scan_commit_ms_median']:.2f} ms, "
            f"p99 {o['scan_commit_ms_p99']:.2f} ms"
        )
        total = args.fixes + 200  # the 200 scans of the latency probe travel too
        for which in args.transports.split(","):
            r = results[which] = ours(tmp, prefilled, total, which)
            print(
                f"{which}: {r['records']:,} records drained in {r['seconds']:.1f} s = "
                f"{r['fixes_per_s']:,.0f} fixes/s end to end, {r['wire_bytes_per_fix']:.1f} bytes/fix "
                f"on the wire, collector holds {r['stored']:,}"
            )
        p = results["peer"] = peer(tmp, fixes[: args.peer_fixes])
        print(
            f"usual approach (JSON per fix, paho QoS 1, row-by-row insert): {p['fixes_per_s']:,.0f} fixes/s, "
            f"{p['wire_bytes_per_fix']:.1f} bytes/fix"
        )
        for which in args.transports.split(","):
            ratio = results[which]["fixes_per_s"] / p["fixes_per_s"]
            results[which]["ratio_vs_usual"] = ratio
            print(f"ratio {which} / usual: {ratio:.1f}x (goal >= 20)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
