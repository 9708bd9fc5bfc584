"""Several collectors side by side: two ``dropline collector`` processes on one Mosquitto, sharing
the vans' batches through an MQTT shared subscription (``$share/dropline-collectors/...``) and
writing into one real PostgreSQL. One is killed with SIGKILL mid-stream: the batches it held
unacknowledged go back to the vans' outboxes and are resent to the survivor.

The truth is what each van committed (its own outbox, read back with SQLite), compared record by
record with what the store holds: nothing missing, nothing extra, no body changed, and each
vehicle's progress contiguous to its last seq with no open gap. The database's unique key on
(vehicle, seq) makes "nothing twice" a property of the table; the test checks the count too.

Two collectors side by side also each serve the live event stream: each shows every record the
shared store holds, whichever collector stored it, once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from paho.mqtt.client import Client, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from cloud.collector import Collector
from cloud.sqldb import SqlDb
from cloud.store_postgres import PostgresStore
from cloud.tokens import Tokens
from protocols import topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.brokers import run_mosquitto
from tests.pipeline_fixtures import (
    DATA,
    Proc,
    agent,
    agent_config,
    load_barefoot,
    outbox_count,
    outbox_records,
    outbox_unacked,
    wait_until,
    write_trace,
)
from tests.postgres import Postgres, run_postgres

VANS = ("van-a", "van-b", "van-c")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


def van_sources(tmp: Path) -> str:
    """A real stream: the Munich drive twice at ~160 fixes/s, the Kona EV CAN log, the scans."""
    trace = write_trace(load_barefoot(), tmp / "munich.jsonl")
    can = DATA / "can" / "kona_ev"
    return f"""
[gps]
driver = "trace-file"
path = "{trace}"
replay_repeat = 2
replay_interval_s = 0.006

[can]
driver = "can-log"
dbc = "{can / "pcan.dbc"}"
mapping = "kona_ev"
path = "{can / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"}"

[scanner]
driver = "scan-file"
path = "{DATA / "barcodes" / "scans_raw.txt"}"
replay_interval_s = 0.02
"""


def start_van(tmp: Path, vehicle: str, broker_url: str) -> Proc:
    home = tmp / vehicle
    home.mkdir()
    config = agent_config(
        home,
        vehicle,
        "mqtt",
        broker_url,
        sources=van_sources(home),
        outbox={"retain_acked": 10_000_000},
        uplink={"ack_timeout_s": 3.0, "keepalive_s": 2.0, "batch_records": 300},
    )
    return agent(home, config)


def acked(tmp: Path, vehicle: str) -> int:
    try:
        return outbox_count(tmp / vehicle / "outbox.db", "acked != 0")
    except Exception:  # the agent may still be creating its outbox
        return 0


def settled(tmp: Path, quiet_s: float = 2.0) -> Any:
    """A predicate: every van's outbox fully acknowledged and unchanged for ``quiet_s``."""
    seen: dict[str, Any] = {"counts": None, "since": time.monotonic()}

    def check() -> bool:
        try:
            counts = [outbox_count(tmp / v / "outbox.db") for v in VANS]
            unacked = sum(outbox_unacked(tmp / v / "outbox.db") for v in VANS)
        except Exception:
            return False
        if counts != seen["counts"]:
            seen["counts"], seen["since"] = counts, time.monotonic()
            return False
        return unacked == 0 and time.monotonic() - seen["since"] >= quiet_s

    return check


def collector(tmp: Path, name: str, url: str, broker_url: str) -> Proc:
    proc = Proc(["collector", "--insecure", "--db", url, "--mqtt", broker_url], tmp / f"{name}.log").start()
    wait_until(lambda: '"mqtt_subscribed":true' in proc.log.read_text(), 30, f"{name} to subscribe")
    return proc


def test_two_collectors_one_killed_mid_stream_store_every_record_once(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_store_url("side_by_side")
    with run_mosquitto(tmp_path) as broker:
        first = collector(tmp_path, "collector-1", url, broker.url)
        second = collector(tmp_path, "collector-2", url, broker.url)
        vans = [start_van(tmp_path, v, broker.url) for v in VANS]
        try:
            # mid-stream: every van has had batches acknowledged, and its drive is far from over
            wait_until(
                lambda: all(acked(tmp_path, v) > 300 for v in VANS), 60, "the first acks from every van"
            )
            with psycopg.connect(url) as db:
                before = db.execute("SELECT count(*) FROM records").fetchone()
            first.kill9()
            sent_by_then = sum(outbox_count(tmp_path / v / "outbox.db") for v in VANS)
            wait_until(settled(tmp_path), 180, "every van's outbox to drain through the survivor")
            assert second.alive(), second.tail()
            for van in vans:
                van.stop()
        finally:
            for van in vans:
                van.stop()
            first.kill9()
            second.stop()
    assert before is not None and 0 < before[0] < sent_by_then, "the kill must come mid-stream"

    store = PostgresStore(url, readonly=True)
    try:
        stored: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in VANS}
        for row in store.export("all"):
            vehicle = row.pop("vehicle")
            assert row["seq"] not in stored[vehicle], f"{vehicle} seq {row['seq']} exported twice"
            stored[vehicle][row["seq"]] = row
        progress = {p.vehicle: p for p in store.vehicles()}
    finally:
        store.close()
    for vehicle in VANS:
        committed = outbox_records(tmp_path / vehicle / "outbox.db")
        got = stored[vehicle]
        missing = sorted(committed.keys() - got.keys())
        extra = sorted(got.keys() - committed.keys())
        different = sorted(s for s in committed.keys() & got.keys() if committed[s] != got[s])
        assert not missing, f"{vehicle}: {len(missing)} committed records never stored: {missing[:10]}"
        assert not extra, f"{vehicle}: {len(extra)} stored records never committed: {extra[:10]}"
        assert not different, f"{vehicle}: {committed[different[0]]} stored as {got[different[0]]}"
        assert {"fix", "signal", "scan"} <= {r["kind"] for r in committed.values()}
        p = progress[vehicle]
        assert (p.records, p.contiguous, p.max_seq, p.open_gaps) == (
            len(committed),
            max(committed),
            max(committed),
            [],
        )


# -- the live event stream follows the shared store ------------------------------------------------


def _listen(url: str, want: int, got: list[tuple[str, int]], connected: threading.Event) -> None:
    """Read a collector's ``/api/v1/events`` until ``want`` record events arrived."""
    with urllib.request.urlopen(url, timeout=60) as r:
        event = None
        for line in r:
            text = line.decode().rstrip("\n")
            if text == ": connected":
                connected.set()
            elif text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: ") and event == "record":
                record = json.loads(text[6:])
                got.append((record["vehicle"], record["seq"]))
                if len(got) >= want:
                    return


def test_each_collector_streams_every_record_once_whoever_stored_it(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Two in-process collectors on one Mosquitto (shared subscription) and one PostgreSQL, each
    with its HTTP API; vans publish batches that the broker spreads over both. Each collector's
    event stream must show every record, once: the ones the other collector stored too."""
    url = postgres.new_store_url("events")
    n_batches, per_batch = 12, 25
    sent = {(v, s) for v in VANS for s in range(1, n_batches * per_batch + 1)}
    with run_mosquitto(tmp_path) as broker:
        collectors = [
            Collector(url, mqtt_url=broker.url, client_id=f"tower-{n}", http_addr="127.0.0.1:0")
            for n in (1, 2)
        ]
        for c in collectors:
            c.start()
        try:
            for c in collectors:
                assert c.mqtt is not None and c.mqtt.ready.wait(15), "collector did not subscribe"
            token = Tokens(SqlDb(url)).create("read")
            streams: list[list[tuple[str, int]]] = [[], []]
            listeners = []
            for c, got in zip(collectors, streams, strict=True):
                connected = threading.Event()
                events = f"http://127.0.0.1:{c.http.bound_port}/api/v1/events?access_token={token}"
                t = threading.Thread(target=_listen, args=(events, len(sent), got, connected), daemon=True)
                t.start()
                assert connected.wait(10)
                listeners.append(t)
            van = Client(CallbackAPIVersion.VERSION2, client_id="vans", protocol=MQTTv311)
            van.connect(broker.host, broker.port)
            van.loop_start()
            try:
                for b in range(n_batches):
                    for vehicle in VANS:
                        first = b * per_batch + 1
                        bodies = [
                            pb.Record(
                                seq=s, fix=pb.Fix(time_ms=1_700_000_000_000 + s * 1000, mode=3, lat_e7=s)
                            ).SerializeToString()
                            for s in range(first, first + per_batch)
                        ]
                        payload = wire.encode_batch(vehicle, b + 1, bodies)
                        van.publish(topics.topic(vehicle, topics.TELEMETRY), payload, qos=1).wait_for_publish(
                            10
                        )
            finally:
                van.loop_stop()
                van.disconnect()
            for t in listeners:
                t.join(60)
            stored_by = [c.ingest.counts["inserted"] for c in collectors]
        finally:
            for c in collectors:
                c.stop()
    assert sum(stored_by) == len(sent) and min(stored_by) > 0, stored_by  # both stored a share
    for got in streams:
        assert len(got) == len(sent) and set(got) == sent  # every record, none twice
    assert streams[0] == streams[1]  # both in the store's commit order, not their own arrival order
