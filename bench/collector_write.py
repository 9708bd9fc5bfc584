"""Collector write throughput: how many records per second the collector's side can store.

Measures, on the same generated fixes, in one run:
  1. ``SqliteStore.write`` alone (records already decoded), batches of ``--batch``;
  2. ``Ingest.handle`` from batch bytes (decode with limits, validate, write, build the Ack),
     plain and zlib-packed;
  3. the same over a real gRPC stream on loopback, and through a real Mosquitto (a window of
     batches in flight, each acknowledged end to end);
  4. the usual approach as a peer: one INSERT and one commit per record (on a sample), and the ratio;
  5. out-of-order sparse seqs (``--sparse``): one van, 16 batches of 20,000 odd-only seqs, newest
     first, each batch's seconds printed (it must not grow with the ranges held), while another
     van writes small batches and its slowest write is printed (how long the fleet waits).
Every commit is fsync'd (WAL, synchronous=FULL), as in production.

Run: ``.venv/bin/python bench/collector_write.py [--records 1000000] [--batch 2000] [--vehicles 1]``
"""

from __future__ import annotations

import argparse
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from cloud.ingest import Ingest
from cloud.store import SqliteStore
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.conftest import free_port

T0 = 1_700_000_000_000


def make_batches(records: int, batch: int, vehicles: int, compress: bool) -> list[tuple[str, bytes]]:
    """Batches of realistic 1 Hz fixes, vehicles interleaved batch by batch (as a depot uploads)."""
    per_vehicle = records // vehicles
    out: list[tuple[str, bytes]] = []
    for first in range(1, per_vehicle + 1, batch):
        for v in range(vehicles):
            name = f"van-{v:04d}"
            encoded = [
                pb.Record(
                    seq=s,
                    fix=pb.Fix(
                        time_ms=T0 + s * 1000,
                        mode=3,
                        lat_e7=481_371_000 + (s * 37) % 20_000,
                        lon_e7=115_754_000 + (s * 53) % 20_000,
                        alt_msl_cm=52_000,
                        speed_cms=(s * 7) % 2_500,
                        track_cdeg=(s * 11) % 36_000,
                        hdop_c=90,
                        sats=12,
                    ),
                ).SerializeToString()
                for s in range(first, min(first + batch, per_vehicle + 1))
            ]
            out.append((name, wire.encode_batch(name, first, encoded, compress=compress)))
    return out


def report(what: str, n: int, seconds: float) -> float:
    rate = n / seconds
    print(f"{what:<58} {n:>9,} records {seconds:7.2f} s {rate:>11,.0f} rec/s {1e6 / rate:6.2f} us/rec")
    return rate


def bench_store(tmp: Path, batches: list[tuple[str, bytes]], n: int) -> float:
    decoded = [(v, wire.decode_batch(data, 1 << 26, 1 << 20).records) for v, data in batches]
    store = SqliteStore(tmp / "store.db")
    start = time.perf_counter()
    for vehicle, records in decoded:
        store.write(vehicle, records)
    rate = report("1. SqliteStore.write (decoded records)", n, time.perf_counter() - start)
    assert sum(p.records for p in store.vehicles()) == n
    store.close()
    return rate


def bench_ingest(tmp: Path, batches: list[tuple[str, bytes]], n: int, label: str) -> float:
    store = SqliteStore(tmp / f"ingest-{label}.db")
    ingest = Ingest(store)
    start = time.perf_counter()
    for vehicle, data in batches:
        ack = ingest.handle(data, vehicle)
        assert not ack.rejected and not ack.reason, ack
    rate = report(f"2. Ingest.handle from bytes ({label})", n, time.perf_counter() - start)
    assert ingest.counts["inserted"] == n
    store.close()
    return rate


def bench_grpc(tmp: Path, batches: list[tuple[str, bytes]], n: int, window: int = 8) -> float:
    import grpc

    from cloud.grpc_server import serve_grpc, stream_method

    store = SqliteStore(tmp / "grpc.db")
    ingest = Ingest(store)
    port = free_port()
    server = serve_grpc(ingest, f"127.0.0.1:{port}")
    by_vehicle: dict[str, list[bytes]] = {}
    for vehicle, data in batches:
        by_vehicle.setdefault(vehicle, []).append(data)
    slots = threading.Semaphore(window * len(by_vehicle))

    def van(items: list[bytes], channel: grpc.Channel) -> None:
        out: queue.Queue[bytes | None] = queue.Queue()

        def requests() -> Iterator[bytes]:
            while (item := out.get()) is not None:
                yield item

        def feed() -> None:
            for item in items:
                slots.acquire()
                out.put(item)

        threading.Thread(target=feed, daemon=True).start()
        for received, _ack in enumerate(stream_method(channel)(requests()), 1):
            slots.release()
            if received == len(items):
                out.put(None)

    start = time.perf_counter()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        threads = [threading.Thread(target=van, args=(items, channel)) for items in by_vehicle.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rate = report(f"3. gRPC stream on loopback (window {window}, zlib)", n, time.perf_counter() - start)
    server.stop(1).wait()
    assert ingest.counts["inserted"] == n
    store.close()
    return rate


def bench_mqtt(tmp: Path, batches: list[tuple[str, bytes]], n: int, window: int = 8) -> float:
    """Through a real Mosquitto on loopback: vans publish QoS 1, the collector acks on the ack topic."""
    from paho.mqtt.client import Client, MQTTMessage, MQTTv311
    from paho.mqtt.enums import CallbackAPIVersion

    from cloud.mqtt_ingest import MqttIngest
    from protocols import topics
    from protocols.mqtt_url import MqttTarget
    from tests.brokers import run_mosquitto

    store = SqliteStore(tmp / "mqtt.db")
    ingest = Ingest(store)
    with run_mosquitto(tmp) as broker:
        collector = MqttIngest(ingest, MqttTarget(broker.host, broker.port))
        collector.start()
        assert collector.ready.wait(10)
        acks: queue.Queue[str] = queue.Queue()
        subscribed = threading.Event()
        van = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv311)

        def on_ack(client: Client, userdata: object, message: MQTTMessage) -> None:
            acks.put(message.topic)

        van.on_message = on_ack
        van.on_subscribe = lambda *a: subscribed.set()
        van.connect(broker.host, broker.port)
        van.loop_start()
        van.subscribe(topics.telemetry_subscription(shared=False).replace(topics.TELEMETRY, topics.ACK), 1)
        assert subscribed.wait(10)
        start = time.perf_counter()
        inflight = 0
        for vehicle, data in batches:
            while inflight >= window:
                acks.get(timeout=60)
                inflight -= 1
            van.publish(topics.topic(vehicle, topics.TELEMETRY), data, qos=1)
            inflight += 1
        for _ in range(inflight):
            acks.get(timeout=60)
        rate = report(
            f"3. MQTT via Mosquitto on loopback (window {window}, zlib)", n, time.perf_counter() - start
        )
        van.disconnect()
        van.loop_stop()
        collector.stop()
    assert ingest.counts["inserted"] == n
    store.close()
    return rate


def bench_row_by_row(tmp: Path, sample: int) -> float:
    """The usual approach as a peer: each record inserted and committed on its own."""
    db = sqlite3.connect(tmp / "rows.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE fixes (vehicle TEXT, seq INTEGER, time_ms INTEGER, lat REAL, lon REAL,"
        " PRIMARY KEY (vehicle, seq))"
    )
    start = time.perf_counter()
    for s in range(1, sample + 1):
        db.execute("BEGIN")
        db.execute("INSERT OR IGNORE INTO fixes VALUES (?,?,?,?,?)", ("van-0000", s, T0 + s, 48.1, 11.5))
        db.execute("COMMIT")
    rate = report("4. peer: one INSERT + commit per record (sample)", sample, time.perf_counter() - start)
    db.close()
    return rate


def bench_sparse(tmp: Path, batches: int = 16, per_batch: int = 20_000) -> None:
    """The reliability issue's pattern: nothing merges and every range goes in at the front."""
    store = SqliteStore(tmp / "sparse.db")
    top = 2 * batches * per_batch
    plan = [
        [fix_record(s) for s in range(top - 1 - 2 * per_batch * b, top - 1 - 2 * per_batch * (b + 1), -2)]
        for b in range(batches)
    ]
    done = threading.Event()
    waits: list[float] = []

    def other_van() -> None:
        seq = 1
        while not done.is_set():
            start = time.perf_counter()
            store.write("van-other", [fix_record(s) for s in range(seq, seq + 100)])
            waits.append(time.perf_counter() - start)
            seq += 100

    other = threading.Thread(target=other_van)
    other.start()
    times = []
    for records in plan:
        start = time.perf_counter()
        store.write("van-sparse", records)
        times.append(time.perf_counter() - start)
    done.set()
    other.join()
    print(f"5. {batches} batches of {per_batch:,} odd-only seqs, newest first: seconds per batch")
    print("   " + " ".join(f"{t:.2f}" for t in times))
    print(
        f"   first {times[0]:.2f} s, last {times[-1]:.2f} s; the other van's slowest write {max(waits):.2f} s"
    )
    [progress] = [p for p in store.vehicles() if p.vehicle == "van-sparse"]
    n = batches * per_batch
    assert progress.records == n and len(progress.open_gaps) == n - 1  # every even seq below the top
    store.close()


def fix_record(s: int) -> pb.Record:
    return pb.Record(seq=s, fix=pb.Fix(time_ms=T0 + s * 1000, mode=3, lat_e7=481_371_000, lon_e7=115_754_000))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--vehicles", type=int, default=1)
    parser.add_argument("--peer-sample", type=int, default=3000, help="records for the row-by-row peer")
    parser.add_argument("--dir", type=Path, help="where the databases go (default: a temporary folder)")
    parser.add_argument("--sparse", action="store_true", help="only the out-of-order sparse scenario (5.)")
    args = parser.parse_args()
    if args.sparse:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            bench_sparse(Path(d))
        return
    n = args.records // args.vehicles * args.vehicles
    print(f"{n:,} fixes, {args.vehicles} vehicle(s), batches of {args.batch}; WAL, synchronous=FULL")
    plain = make_batches(n, args.batch, args.vehicles, compress=False)
    packed = make_batches(n, args.batch, args.vehicles, compress=True)
    print(
        f"bytes per fix in a batch: {sum(len(b) for _, b in plain) / n:.1f} plain, "
        f"{sum(len(b) for _, b in packed) / n:.1f} zlib"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        tmp = Path(d)
        store_rate = bench_store(tmp, plain, n)
        bench_ingest(tmp, plain, n, "plain")
        ingest_rate = bench_ingest(tmp, packed, n, "zlib")
        bench_grpc(tmp, packed, n)
        bench_mqtt(tmp, packed, n)
        peer = bench_row_by_row(tmp, args.peer_sample)
    print(
        f"ratio store.write / row-by-row peer: {store_rate / peer:,.0f}x; "
        f"ingest (zlib) / peer: {ingest_rate / peer:,.0f}x"
    )


if __name__ == "__main__":
    main()
