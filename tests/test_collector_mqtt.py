"""A real Mosquitto (started by a fixture on a free loopback port) between vans and the collector:
batches published QoS 1 as a van does, acks received on the van's ack topic, the store checked."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from paho.mqtt.client import Client, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from cloud.grpc_server import stream_method
from cloud.ingest import Ingest, Limits
from cloud.mqtt_ingest import MqttIngest
from cloud.store import SqliteStore
from protocols import topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.mqtt_url import MqttTarget, parse_mqtt_url
from tests.brokers import Mosquitto, run_mosquitto
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(90)
T0 = 1_700_000_000_000


def batch(vehicle: str, first: int, n: int, batch_id: int | None = None) -> bytes:
    records = [
        pb.Record(
            seq=s, fix=pb.Fix(time_ms=T0 + s * 1000, mode=3, lat_e7=481_000_000, lon_e7=s)
        ).SerializeToString()
        for s in range(first, first + n)
    ]
    return wire.encode_batch(vehicle, first if batch_id is None else batch_id, records)


class Van:
    """A van's MQTT side: publishes to its telemetry topic, collects Acks from its ack topic."""

    def __init__(self, broker: Mosquitto, vehicle: str) -> None:
        self.vehicle = vehicle
        self.acks: queue.Queue[pb.Ack] = queue.Queue()
        subscribed = threading.Event()
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=f"van-{uuid.uuid4().hex[:8]}", protocol=MQTTv311
        )
        self.client.on_message = lambda c, u, m: self.acks.put(pb.Ack.FromString(bytes(m.payload)))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        self.client.subscribe(topics.topic(vehicle, topics.ACK), qos=1)
        assert subscribed.wait(10)

    def publish(self, payload: bytes, topic: str | None = None) -> None:
        info = self.client.publish(topic or topics.topic(self.vehicle, topics.TELEMETRY), payload, qos=1)
        info.wait_for_publish(10)

    def ack(self, timeout: float = 15.0) -> pb.Ack:
        return self.acks.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with run_mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    store = SqliteStore(tmp_path / "collector.db")
    yield Ingest(store, Limits(max_bytes=256 * 1024, max_records=5000))
    store.close()


def start_collector(ingest: Ingest, broker: Mosquitto, client_id: str | None = None) -> MqttIngest:
    mq = MqttIngest(ingest, MqttTarget(broker.host, broker.port), client_id=client_id)
    mq.start()
    assert mq.ready.wait(15), "collector did not subscribe"
    return mq


def ranges(ack: pb.Ack) -> list[tuple[int, int]]:
    return [(r.first, r.last) for r in ack.stored]


def test_parse_mqtt_url() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == MqttTarget("127.0.0.1", 1884)
    assert parse_mqtt_url("broker.local") == MqttTarget("broker.local", 1883)
    assert parse_mqtt_url("mqtt://u%40x:p@h") == MqttTarget("h", 1883, "u@x", "p")
    for bad in ("http://h", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


def test_batches_published_are_stored_and_acked(broker: Mosquitto, ingest: Ingest) -> None:
    mq = start_collector(ingest, broker)
    van = Van(broker, "van-1")
    try:
        for first in (201, 1, 101, 1):  # newest first, then a retry
            van.publish(batch("van-1", first, 100))
        acks = sorted((van.ack() for _ in range(4)), key=lambda a: a.batch_id)
        assert [ranges(a) for a in acks] == [[(1, 100)], [(1, 100)], [(101, 200)], [(201, 300)]]
        assert max(a.contiguous for a in acks) == 300
        assert all(a.vehicle == "van-1" and not a.rejected for a in acks)
        progress = ingest.store.vehicles()
        assert [(p.vehicle, p.records, p.contiguous) for p in progress] == [("van-1", 300, 300)]
    finally:
        van.close()
        mq.stop()


def test_hostile_messages_are_refused_and_the_next_batch_still_stored(
    broker: Mosquitto, ingest: Ingest
) -> None:
    mq = start_collector(ingest, broker)
    van = Van(broker, "van-1")
    try:
        van.publish(b"\x00\x01garbage")
        assert van.ack().reason == "undecodable"
        van.publish(batch("van-2", 1, 10))  # a van publishing another van's batch under its own topic
        ack = van.ack()
        assert ack.rejected and ack.reason == "vehicle_mismatch" and ack.vehicle == "van-1"
        van.publish(
            wire.encode_batch("van-1", 9, [b"\x08\x01" + b"\x00" * 100] * 4000)
        )  # over the byte limit
        assert van.ack().reason == "oversized"
        van.publish(b"x", topic="dropline/v1/van!1/telemetry")  # not a valid vehicle id: no one to answer
        van.publish(batch("van-1", 1, 10))
        ack = van.ack()
        assert not ack.rejected and ranges(ack) == [(1, 10)]
        assert ingest.rejects.as_dict() == {
            "undecodable": 1,
            "vehicle_mismatch": 1,
            "oversized": 1,
            "bad_topic": 1,
        }
        assert [(p.vehicle, p.records) for p in ingest.store.vehicles()] == [("van-1", 10)]
    finally:
        van.close()
        mq.stop()


def test_collector_reconnects_and_resubscribes_after_a_broker_restart(
    broker: Mosquitto, ingest: Ingest
) -> None:
    mq = start_collector(ingest, broker)
    try:
        van = Van(broker, "van-1")
        van.publish(batch("van-1", 1, 10))
        assert ranges(van.ack()) == [(1, 10)]
        van.close()
        broker.restart()  # persistence false: every session and subscription is gone
        deadline = time.monotonic() + 20
        while mq.ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mq.ready.wait(20), "collector did not resubscribe"
        van = Van(broker, "van-1")
        van.publish(batch("van-1", 11, 10))
        assert ranges(van.ack()) == [(11, 20)]
        van.close()
        assert ingest.store.vehicles()[0].contiguous == 20
    finally:
        mq.stop()


@pytest.fixture
def late_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker the test starts itself (on a port chosen now); stopped here in any case."""
    broker = Mosquitto(tmp_path)
    yield broker
    broker.stop()


def test_collector_started_before_the_broker_connects_when_it_comes_up(
    late_broker: Mosquitto, ingest: Ingest
) -> None:
    mq = MqttIngest(ingest, MqttTarget(late_broker.host, late_broker.port))
    mq.start()
    try:
        time.sleep(1.5)
        assert not mq.ready.is_set()
        late_broker.start()
        assert mq.ready.wait(20)
        van = Van(late_broker, "van-1")
        van.publish(batch("van-1", 1, 10))
        assert ranges(van.ack()) == [(1, 10)]
        van.close()
    finally:
        mq.stop()


def test_persistent_session_receives_what_was_published_while_the_collector_was_away(
    broker: Mosquitto, ingest: Ingest
) -> None:
    mq = start_collector(ingest, broker, client_id="collector-a")
    mq.stop()
    van = Van(broker, "van-1")
    try:
        van.publish(batch("van-1", 1, 10))
        van.publish(batch("van-1", 11, 10))
        mq = start_collector(ingest, broker, client_id="collector-a")
        acks = sorted((van.ack(), van.ack()), key=lambda a: a.batch_id)
        assert [ranges(a) for a in acks] == [[(1, 10)], [(11, 20)]]
    finally:
        van.close()
        mq.stop()


def test_two_collectors_share_the_subscription_and_the_database(broker: Mosquitto, tmp_path: Path) -> None:
    """Scale-out: each batch goes to one collector of the shared group; both write one file."""
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    ingests = [Ingest(s) for s in stores]
    collectors = [start_collector(i, broker) for i in ingests]
    vans = [Van(broker, f"van-{i}") for i in range(3)]
    try:
        for first in range(1, 400, 20):
            for van in vans:
                van.publish(batch(van.vehicle, first, 20))
        for van in vans:
            acks = [van.ack() for _ in range(20)]
            assert sorted(r for a in acks for r in ranges(a)) == [(f, f + 19) for f in range(1, 400, 20)]
        assert sum(i.counts["batches"] for i in ingests) == 60  # every batch handled exactly once
        assert all(i.counts["batches"] > 0 for i in ingests)
        assert [(p.vehicle, p.records, p.contiguous, p.open_gaps) for p in stores[0].vehicles()] == [
            (f"van-{i}", 400, 400, []) for i in range(3)
        ]
    finally:
        for van in vans:
            van.close()
        for c in collectors:
            c.stop()
        for s in stores:
            s.close()


def test_broker_puback_waits_for_the_commit(broker: Mosquitto, tmp_path: Path) -> None:
    """A collector that committed a batch but went away before acknowledging it: the broker still
    holds the message (no PUBACK yet) and delivers it to the next collector of the same session,
    which stores nothing twice and answers the van."""
    committed, release = threading.Event(), threading.Event()

    def hold(vehicle: str, result: object) -> None:
        committed.set()
        release.wait(20)

    store_a, store_b = SqliteStore(tmp_path / "c.db"), SqliteStore(tmp_path / "c.db")
    ingest_a, ingest_b = Ingest(store_a, after_commit=hold), Ingest(store_b)
    first = start_collector(ingest_a, broker, client_id="collector-x")
    van = Van(broker, "van-1")
    second = None
    try:
        van.publish(batch("van-1", 1, 10))
        assert committed.wait(15)
        first.client.disconnect()  # gone between commit and ack
        release.set()
        second = start_collector(ingest_b, broker, client_id="collector-x")
        ack = van.ack()
        assert ranges(ack) == [(1, 10)] and not ack.rejected
        assert (ingest_b.counts["inserted"], ingest_b.counts["duplicates"]) == (0, 10)
        assert store_b.vehicles()[0].records == 10
    finally:
        release.set()
        van.close()
        first.stop()
        if second is not None:
            second.stop()
        store_a.close()
        store_b.close()


# -- the `dropline collector` / `dropline export` commands ----------------------------------------


class CollectorProcess:
    """``dropline collector`` as a subprocess; its stdout JSON lines read on a thread."""

    def __init__(self, args: list[str], log: Path) -> None:
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=str(root))
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dropline_cli", "collector", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=root,
                env=env,
            )
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def line(self, timeout: float = 20.0) -> dict[str, object]:
        return self.lines.get(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def run_collector(tmp_path: Path) -> Iterator[Callable[[list[str]], CollectorProcess]]:
    started: list[CollectorProcess] = []

    def start(args: list[str]) -> CollectorProcess:
        started.append(CollectorProcess(args, tmp_path / "collector.log"))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def export(db: Path, kind: str) -> list[dict[str, object]]:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "export", "--db", str(db), "--kind", kind],
        capture_output=True,
        check=True,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)),
        timeout=60,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_collector_command_serves_both_transports_and_stops_on_sigterm(
    broker: Mosquitto, tmp_path: Path, run_collector: Callable[[list[str]], CollectorProcess]
) -> None:
    db, port = tmp_path / "c.db", free_port()
    proc = run_collector(["--db", str(db), "--grpc", f"127.0.0.1:{port}", "--mqtt", broker.url])
    assert proc.line()["ready"] is True
    van = Van(broker, "van-1")
    try:
        deadline = time.monotonic() + 20
        while True:  # the collector's subscription may land a moment after its ready line
            van.publish(batch("van-1", 1, 10))
            try:
                assert ranges(van.ack(timeout=1)) == [(1, 10)]
                break
            except queue.Empty:
                assert time.monotonic() < deadline
    finally:
        van.close()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        gap = pb.Record(seq=30, gap=pb.Gap(from_seq=11, to_seq=29, reason="disk_budget")).SerializeToString()
        acks = [d.ack for d in stream_method(channel)(iter([wire.encode_batch("van-2", 1, [gap]), b"junk"]))]
    assert [(ranges(a), a.rejected, a.reason) for a in acks] == [
        ([(30, 30)], False, ""),
        ([], True, "undecodable"),
    ]
    proc.proc.send_signal(signal.SIGTERM)
    stopped = proc.line()
    assert stopped["stopped"] is True and stopped["rejects"] == {"undecodable": 1}
    assert proc.proc.wait(20) == 0
    vehicles = export(db, "vehicles")
    assert [(v["vehicle"], v["contiguous"], v["open_gaps"], v["explained_gaps"]) for v in vehicles] == [
        ("van-1", 10, [], []),
        ("van-2", 0, [[1, 10]], [[11, 29]]),
    ]
    assert [(r["vehicle"], r["seq"]) for r in export(db, "all")] == [("van-1", s) for s in range(1, 11)] + [
        ("van-2", 30)
    ]
    assert export(db, "deliveries") == []


def test_collector_dying_between_commit_and_ack_loses_nothing(
    tmp_path: Path, run_collector: Callable[[list[str]], CollectorProcess]
) -> None:
    db, port = tmp_path / "c.db", free_port()
    addr = f"127.0.0.1:{port}"
    crashing = run_collector(["--db", str(db), "--grpc", addr, "--exit-after-commits", "1"])
    crashing.line()
    with grpc.insecure_channel(addr) as channel, pytest.raises(grpc.RpcError):
        list(stream_method(channel)(iter([batch("van-1", 1, 10)])))  # stored, never acknowledged
    assert crashing.proc.wait(10) == 70
    proc = run_collector(["--db", str(db), "--grpc", addr])
    proc.line()
    with grpc.insecure_channel(addr) as channel:
        acks = [d.ack for d in stream_method(channel)(iter([batch("van-1", 1, 10)]))]  # the van's resend
    assert ranges(acks[0]) == [(1, 10)]
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.line()["duplicates"] == 10
    assert [v["records"] for v in export(db, "vehicles")] == [10]


def test_collector_announces_each_subscription_on_the_collectors_topic(
    broker: Mosquitto, ingest: Ingest
) -> None:
    """Vans resend at once what no collector was subscribed for when they hear a collector on
    ``dropline/v1/collectors``: it must say so when it subscribes, and again after a broker restart."""
    heard: queue.Queue[bytes] = queue.Queue()

    def listen() -> Client:
        subscribed = threading.Event()
        client = Client(
            CallbackAPIVersion.VERSION2, client_id=f"van-{uuid.uuid4().hex[:8]}", protocol=MQTTv311
        )
        client.on_message = lambda c, u, m: heard.put(bytes(m.payload))
        client.on_subscribe = lambda *a: subscribed.set()
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()
        client.subscribe(topics.COLLECTORS, qos=1)
        assert subscribed.wait(10)
        return client

    listener = listen()
    mq = start_collector(ingest, broker)
    try:
        assert heard.get(timeout=10) == b"online"
        listener.disconnect()
        listener.loop_stop()
        broker.restart()
        listener = listen()  # a van back on the restarted broker, before the collector
        assert heard.get(timeout=20) == b"online"
    finally:
        listener.disconnect()
        listener.loop_stop()
        mq.stop()
