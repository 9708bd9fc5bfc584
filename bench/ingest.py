"""Fleet ingest: many simulated vans send real batches through Mosquitto into real collector
processes, with SQLite and with PostgreSQL, against the usual approach in the same run.

* Vans: ``--vans`` of them, each replaying the real Munich drive (tests/data/traces) as fixes,
  encoded as a van encodes them (``convert.encode_body``, one ``fix`` segment per batch of
  ``--batch`` fixes, zlib-packed by ``wire.encode_batch``), published QoS 1 on the van's
  telemetry topic with at most ``--window`` batches unacknowledged per van, as the uplink does.
  Batches are encoded before the clock starts: the figure is the collector side's.
* Collectors: ``--collectors`` ``dropline collector`` processes on one Mosquitto (MQTT shared
  subscription), writing into one store: a SQLite file (WAL, synchronous=FULL) or a PostgreSQL
  server started here (fsync on, synchronous_commit on: every ack is durable).
* Throughput: every batch published as fast as acks allow; fixes stored per second from the
  first publish to the last batch visible in the store.
* Latency: a second phase at a steady offered load (``--load`` of the measured throughput),
  from a batch leaving the van to its fixes being visible in the store: a reader polls
  ``Store.vehicles()`` (a van's ``contiguous`` reaching the batch's last seq; conservative, a
  batch stored ahead of an earlier one counts only once the earlier one is in). p50 and p99.
* The usual approach (Traccar's default path: one row per position, one INSERT and one commit
  each) into the same kind of database, on ``--usual`` fixes, and the ratio.

Run: ``.venv/bin/python bench/ingest.py [--vans 200] [--batch 1000] [--batches 3] [--collectors 4]``
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

import psycopg
from paho.mqtt.client import Client, MQTTMessage, MQTTv5
from paho.mqtt.enums import CallbackAPIVersion

from cloud.store import SqliteStore, Store
from cloud.store_postgres import PostgresStore
from protocols import convert, topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import Fix
from tests.brokers import run_mosquitto
from tests.pipeline_fixtures import ROOT, load_barefoot
from tests.postgres import run_postgres


@dataclass(slots=True)
class Batch:
    vehicle: str
    batch_id: int
    last_seq: int
    fixes: int
    data: bytes
    sent: float = math.nan
    acked: float = math.nan
    visible: float = math.nan


@dataclass(slots=True)
class Van:
    name: str
    batches: list[Batch]
    next: int = 0  # index of the next batch to publish
    in_flight: set[int] = field(default_factory=set)


def drive_bodies(loops: int) -> list[bytes]:
    """The Munich drive's fixes as encoded fix bodies, driven ``loops`` times back to back."""
    drive = load_barefoot()
    span = drive[-1].time - drive[0].time + 1.0
    out = []
    for k in range(loops):
        for fx in drive:
            out.append(convert.encode_body(Fix(time=fx.time + k * span, mode=2, lat=fx.lat, lon=fx.lon))[1])
    return out


def make_vans(vans: int, batches: int, per_batch: int, first_batch: int = 0) -> list[Van]:
    """Each van's next ``batches`` batches of ``per_batch`` real fixes (seqs continue across phases)."""
    drive = load_barefoot()
    loops = (first_batch + batches) * per_batch // len(drive) + 1
    bodies = drive_bodies(loops)
    out = []
    for v in range(vans):
        name = f"van-{v:05d}"
        own = []
        for b in range(first_batch, first_batch + batches):
            seqs = list(range(b * per_batch + 1, (b + 1) * per_batch + 1))
            segment = wire.Segment("fix", seqs, bodies[seqs[0] - 1 : seqs[-1]])
            data = wire.encode_batch(name, b + 1, compress=True, segments=[segment])
            own.append(Batch(name, b + 1, seqs[-1], per_batch, data))
        out.append(Van(name, own))
    return out


class Fleet:
    """Publishes the vans' batches with a per-van window and notes when each is acknowledged."""

    def __init__(self, host: str, port: int, vans: list[Van], window: int, clients: int = 4) -> None:
        self.vans = {v.name: v for v in vans}
        self.window = window
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.outstanding = sum(len(v.batches) for v in vans)
        self.pacing = False  # paced: batches go out on a clock, not when acks free the window
        self.clients = []
        for i in range(clients):
            c = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-vans-{i}", protocol=MQTTv5)
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.connect(host, port, keepalive=30)
            c.loop_start()
            self.clients.append(c)
        self.clients[0].on_message = self._on_ack
        subscribed = threading.Event()
        self.clients[0].on_subscribe = lambda *a: subscribed.set()
        self.clients[0].subscribe(f"{topics.PREFIX}/+/{topics.ACK}", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the vans' ack subscription was not confirmed")

    def _publish(self, van: Van) -> None:
        """Publish the van's next batch if its window allows (call with the lock held)."""
        while van.next < len(van.batches) and len(van.in_flight) < self.window:
            batch = van.batches[van.next]
            van.in_flight.add(batch.batch_id)
            van.next += 1
            batch.sent = time.monotonic()
            client = self.clients[hash(van.name) % len(self.clients)]
            client.publish(topics.topic(van.name, topics.TELEMETRY), batch.data, qos=1)

    def start(self) -> None:
        with self.lock:
            for van in self.vans.values():
                self._publish(van)

    def _on_ack(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        now = time.monotonic()
        ack = pb.Ack.FromString(bytes(message.payload))
        van = self.vans.get(ack.vehicle)
        if van is None or ack.batch_id not in van.in_flight:
            return  # a stray or repeated ack
        if ack.reason or ack.rejected:
            raise RuntimeError(f"batch {ack.batch_id} of {ack.vehicle} refused: {ack.reason}")
        with self.lock:
            van.in_flight.discard(ack.batch_id)
            van.batches[ack.batch_id - van.batches[0].batch_id].acked = now
            self.outstanding -= 1
            if not self.pacing:
                self._publish(van)
            if self.outstanding == 0:
                self.done.set()

    def paced(self, rate_fixes_s: float, per_batch: int) -> None:
        """Publish one batch at a time round-robin over the vans at ``rate_fixes_s`` fixes/s."""
        self.pacing = True
        interval = per_batch / rate_fixes_s
        order = [
            v for _ in range(max(len(v.batches) for v in self.vans.values())) for v in self.vans.values()
        ]
        start = time.monotonic()
        for i, van in enumerate(order):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self.lock:
                if van.next < len(van.batches):
                    batch = van.batches[van.next]
                    van.next += 1
                    van.in_flight.add(batch.batch_id)
                    batch.sent = time.monotonic()
                    client = self.clients[hash(van.name) % len(self.clients)]
                    client.publish(topics.topic(van.name, topics.TELEMETRY), batch.data, qos=1)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


def watch_visibility(open_store: Callable[[], Store], vans: list[Van], stop: threading.Event) -> None:
    """Poll the store; stamp each batch when its van's contiguous seq reaches its last seq."""
    pending = {v.name: 0 for v in vans}  # index of the first batch not yet seen
    by_name = {v.name: v for v in vans}
    store = open_store()
    try:
        while not stop.is_set():
            progress = store.vehicles()
            now = time.monotonic()
            for p in progress:
                van = by_name.get(p.vehicle)
                if van is None:
                    continue
                i = pending[p.vehicle]
                while i < len(van.batches) and van.batches[i].last_seq <= p.contiguous:
                    van.batches[i].visible = now
                    i += 1
                pending[p.vehicle] = i
            if all(pending[v.name] == len(v.batches) for v in vans):
                return
            time.sleep(0.02)
    finally:
        store.close()


def start_collectors(db: str, broker_url: str, n: int, logdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = (logdir / f"collector-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dropline_cli",
                    "collector",
                    "--insecure",
                    "--db",
                    db,
                    "--mqtt",
                    broker_url,
                ],
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        )
    for i in range(n):
        deadline = time.monotonic() + 30
        while b'"mqtt_subscribed":true' not in (logdir / f"collector-{i}.log").read_bytes():
            if time.monotonic() > deadline or procs[i].poll() is not None:
                raise RuntimeError((logdir / f"collector-{i}.log").read_text()[-2000:])
            time.sleep(0.05)
    return procs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def run_phase(
    broker: Any,
    open_store: Callable[[], Store],
    vans: list[Van],
    window: int,
    rate: float | None,
    per_batch: int,
) -> list[Batch]:
    fleet = Fleet(broker.host, broker.port, vans, window)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_visibility, args=(open_store, vans, stop), daemon=True)
    watcher.start()
    try:
        if rate is None:
            fleet.start()
        else:
            fleet.paced(rate, per_batch)
        if not fleet.done.wait(600):
            raise RuntimeError(f"{fleet.outstanding} batches never acknowledged")
        watcher.join(60)
    finally:
        stop.set()
        fleet.close()
    return [b for v in vans for b in v.batches]


def usual_postgres(url: str, fixes: int) -> float:
    """One row per fix, one INSERT and one commit each (autocommit): fixes per second."""
    bodies = drive_bodies(fixes // 1194 + 1)[:fixes]
    rows = [pb.Fix.FromString(b) for b in bodies]
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS positions (id bigserial PRIMARY KEY, vehicle text, time_ms bigint,"
            " lat_e7 integer, lon_e7 integer, speed_cms integer, track_cdeg integer)"
        )
        start = time.perf_counter()
        for f in rows:
            db.execute(
                "INSERT INTO positions (vehicle, time_ms, lat_e7, lon_e7, speed_cms, track_cdeg)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                ("van-usual", f.time_ms, f.lat_e7, f.lon_e7, f.speed_cms, f.track_cdeg),
            )
        return fixes / (time.perf_counter() - start)


def usual_sqlite(path: Path, fixes: int) -> float:
    bodies = drive_bodies(fixes // 1194 + 1)[:fixes]
    rows = [pb.Fix.FromString(b) for b in bodies]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS positions (id INTEGER PRIMARY KEY, vehicle TEXT, time_ms INTEGER,"
        " lat_e7 INTEGER, lon_e7 INTEGER, speed_cms INTEGER, track_cdeg INTEGER)"
    )
    start = time.perf_counter()
    for f in rows:
        db.execute(
            "INSERT INTO positions (vehicle, time_ms, lat_e7, lon_e7, speed_cms, track_cdeg)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ("van-usual", f.time_ms, f.lat_e7, f.lon_e7, f.speed_cms, f.track_cdeg),
        )
    rate = fixes / (time.perf_counter() - start)
    db.close()
    return rate


@contextmanager
def backend(kind: str, workdir: Path) -> Iterator[tuple[str, Callable[[], Store], Callable[[int], float]]]:
    """(--db value, a read-only store opener, the usual approach's fixes/s for n fixes)."""
    if kind == "sqlite":
        path = workdir / "collector.db"
        SqliteStore(path).close()
        yield (
            str(path),
            lambda: SqliteStore(path, readonly=True),
            lambda n: usual_sqlite(workdir / "usual.db", n),
        )
        return
    with run_postgres(fsync=True) as server:
        url = server.url()
        PostgresStore(url).close()
        yield url, lambda: PostgresStore(url, readonly=True), lambda n: usual_postgres(url, n)


def bench(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dropline-ingest-") as tmp:
        workdir = Path(tmp)
        backend_cm: AbstractContextManager[Any] = backend(kind, workdir)
        with run_mosquitto(workdir) as broker, backend_cm as (db, open_store, usual):
            collectors = start_collectors(db, broker.url, args.collectors, workdir)
            try:
                vans = make_vans(args.vans, args.batches, args.batch)
                batches = run_phase(broker, open_store, vans, args.window, None, args.batch)
                first = min(b.sent for b in batches)
                last = max(b.visible for b in batches)
                fixes = sum(b.fixes for b in batches)
                rate = fixes / (last - first)
                steady = rate * args.load
                later = make_vans(args.vans, args.paced_batches, args.batch, first_batch=args.batches)
                paced = run_phase(broker, open_store, later, args.window, steady, args.batch)
                visible = [b.visible - b.sent for b in paced]
                acked = [b.acked - b.sent for b in paced]
                usual_rate = usual(args.usual)
            finally:
                for p in collectors:
                    p.terminate()
                for p in collectors:
                    p.wait(30)
    return {
        "store": kind,
        "vans": args.vans,
        "collectors": args.collectors,
        "fixes": fixes,
        "fixes_per_s": round(rate),
        "paced_fixes_per_s": round(steady),
        "visible_p50_s": round(statistics.median(visible), 3),
        "visible_p99_s": round(percentile(visible, 0.99), 3),
        "ack_p50_s": round(statistics.median(acked), 3),
        "ack_p99_s": round(percentile(acked, 0.99), 3),
        "usual_fixes_per_s": round(usual_rate),
        "ratio": round(rate / usual_rate, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vans", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000, help="fixes per batch")
    parser.add_argument("--batches", type=int, default=3, help="batches per van, throughput phase")
    parser.add_argument("--paced-batches", type=int, default=2, help="batches per van, latency phase")
    parser.add_argument("--window", type=int, default=2, help="unacknowledged batches per van")
    parser.add_argument(
        "--collectors",
        type=int,
        default=4,
        help="collector processes; each stores one batch at a time and idles while its commit is "
        "fsync'd, so two per core keep the cores busy",
    )
    parser.add_argument("--load", type=float, default=0.5, help="latency phase load, share of throughput")
    parser.add_argument("--usual", type=int, default=3000, help="fixes for the one-row-at-a-time peer")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    results = []
    for kind in ("sqlite", "postgres") if args.store == "both" else (args.store,):
        r = bench(kind, args)
        results.append(r)
        print(
            f"{kind}: {r['fixes']} fixes from {r['vans']} vans via {r['collectors']} collectors:"
            f" {r['fixes_per_s']} fixes/s stored; at {r['paced_fixes_per_s']} fixes/s offered, visible"
            f" p50 {r['visible_p50_s']} s p99 {r['visible_p99_s']} s (ack p50 {r['ack_p50_s']} s"
            f" p99 {r['ack_p99_s']} s); usual one-row-per-fix {r['usual_fixes_per_s']} fixes/s;"
            f" ratio {r['ratio']}x",
            flush=True,
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
