"""Mutual TLS and identity, against a real gRPC collector and a real Mosquitto on loopback with
certificates from ``dropline pki``: no van speaks for another, and no client without a
certificate from the fleet's CA gets in."""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.transport_grpc import GrpcTransport
from cloud.grpc_server import serve_grpc
from cloud.ingest import Ingest
from cloud.mqtt_ingest import MqttIngest
from cloud.store import SqliteStore
from dropline_cli import pki
from protocols import topics, wire
from protocols.downlink import Ack
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import TransportError
from protocols.mqtt_url import MqttTarget
from protocols.tls import TlsFiles, vehicle_of
from tests.brokers import run_mosquitto
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)
T0 = 1_700_000_000_000


def batch(vehicle: str, first: int, n: int, lon: int = 0) -> bytes:
    records = [
        pb.Record(seq=s, fix=pb.Fix(time_ms=T0 + s * 1000, mode=3, lat_e7=481_000_000, lon_e7=lon + s))
        for s in range(first, first + n)
    ]
    return wire.encode_batch(vehicle, first, [r.SerializeToString() for r in records], compress=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, vans A and B, a collector, and a CA nobody trusts with a van A of its own."""
    root = tmp_path_factory.mktemp("pki")
    pki.init(root / "fleet")
    for van in ("van-a", "van-b"):
        pki.issue_vehicle(root / "fleet", van)
    pki.issue_collector(root / "fleet", "main", ["localhost", "127.0.0.1"])
    pki.init(root / "rogue")
    pki.issue_vehicle(root / "rogue", "van-a")
    return root


def van_tls(root: Path, van: str, ca: str = "fleet") -> TlsFiles:
    d = root / ca
    return TlsFiles(root / "fleet" / "ca.pem", d / "vehicles" / f"{van}.pem", d / "vehicles" / f"{van}.key")


def collector_tls(root: Path) -> TlsFiles:
    d = root / "fleet"
    return TlsFiles(d / "ca.pem", d / "collectors" / "main.pem", d / "collectors" / "main.key")


def test_certificates_carry_the_vehicle_id_and_the_collector_is_not_a_vehicle(fleet: Path) -> None:
    assert vehicle_of((fleet / "fleet" / "vehicles" / "van-a.pem").read_bytes()) == "van-a"
    assert vehicle_of((fleet / "fleet" / "collectors" / "main.pem").read_bytes()) is None
    assert vehicle_of(b"not a certificate") is None


# -- gRPC ------------------------------------------------------------------------------------------


@pytest.fixture
def grpc_collector(fleet: Path, tmp_path: Path) -> Iterator[tuple[str, Ingest, SqliteStore]]:
    store = SqliteStore(tmp_path / "collector.db")
    ingest = Ingest(store)
    addr = f"127.0.0.1:{free_port()}"
    server = serve_grpc(ingest, addr, tls=collector_tls(fleet))
    try:
        yield addr, ingest, store
    finally:
        server.stop(0).wait()
        store.close()


def send(transport: GrpcTransport, data: bytes) -> Ack:
    transport.send(data)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in transport.receive(0.5):
            if message.ack is not None:
                return message.ack
    raise TimeoutError("no ack")


def stored_lons(store: SqliteStore, vehicle: str) -> list[int]:
    return [round(r["lon"] * 1e7) for r in store.export("fixes", vehicle)]


def test_a_batch_claiming_b_over_a_connection_is_refused_and_b_untouched(
    fleet: Path, grpc_collector: tuple[str, Ingest, SqliteStore]
) -> None:
    addr, ingest, store = grpc_collector
    a = GrpcTransport(addr, tls=van_tls(fleet, "van-a"))
    a.connect(10)
    try:
        spoof = send(a, batch("van-b", 1, 3, lon=900))  # B's first seqs with A's bodies
        assert spoof.rejected and spoof.reason == "vehicle_mismatch"
        assert ingest.rejects.as_dict().get("vehicle_mismatch") == 1
        assert not send(a, batch("van-a", 1, 2)).rejected  # A's own still flow on that stream
    finally:
        a.close()
    assert stored_lons(store, "van-b") == []
    b = GrpcTransport(addr, tls=van_tls(fleet, "van-b"))
    b.connect(10)
    try:
        ack = send(b, batch("van-b", 1, 3, lon=500))
    finally:
        b.close()
    assert not ack.rejected and [(r.first, r.last) for r in ack.stored] == [(1, 3)]
    assert stored_lons(store, "van-b") == [501, 502, 503]  # B's own bodies, not the spoofer's
    assert stored_lons(store, "van-a") == [1, 2]


@pytest.mark.parametrize("who", ["no certificate", "another CA", "collector certificate", "plaintext"])
def test_clients_without_a_fleet_vehicle_certificate_are_refused(
    fleet: Path, grpc_collector: tuple[str, Ingest, SqliteStore], who: str
) -> None:
    addr, ingest, store = grpc_collector
    import grpc

    if who == "plaintext":
        transport = GrpcTransport(addr)
    elif who == "another CA":
        transport = GrpcTransport(addr, tls=van_tls(fleet, "van-a", ca="rogue"))
    elif who == "collector certificate":
        transport = GrpcTransport(addr, tls=collector_tls(fleet))
    else:
        transport = GrpcTransport(addr)
        ca = (fleet / "fleet" / "ca.pem").read_bytes()
        transport._credentials = grpc.ssl_channel_credentials(ca)  # server checked, no client cert
    try:
        with pytest.raises(TransportError):
            transport.connect(3)
            send(transport, batch("van-a", 1, 1))
    finally:
        transport.close()
    assert stored_lons(store, "van-a") == []
    if who == "collector certificate":  # it got through TLS, so the collector itself refused it
        assert ingest.rejects.as_dict().get("not_a_vehicle_certificate") == 1


# -- MQTT -------------------------------------------------------------------------------------------


@pytest.fixture
def tls_broker(fleet: Path, tmp_path: Path) -> Iterator[Any]:
    port = free_port()
    out = pki.mosquitto_conf(fleet / "fleet", port, "127.0.0.1", ["localhost", "127.0.0.1"])
    with run_mosquitto(tmp_path, port, listener=out["conf"].read_text()) as broker:
        yield broker


def mqtt_client(
    broker: Any, tls: TlsFiles | None, inbox: queue.Queue[mqtt.MQTTMessage] | None = None
) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if tls is not None:
        client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
    if inbox is not None:
        client.on_message = lambda _c, _u, m: inbox.put(m)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def wait_acked(store: SqliteStore, vehicle: str, n: int) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(lons := stored_lons(store, vehicle)) >= n:
            return lons
        time.sleep(0.05)
    raise TimeoutError(f"{vehicle}: {n} records not stored")


def test_broker_refuses_van_a_on_van_b_topics(fleet: Path, tls_broker: Any, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "collector.db")
    ingest = Ingest(store)
    hub = MqttIngest(ingest, MqttTarget(tls_broker.host, tls_broker.port), tls=collector_tls(fleet))
    hub.start()
    a_inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    a = mqtt_client(tls_broker, van_tls(fleet, "van-a"), a_inbox)
    try:
        assert hub.ready.wait(20)
        a.subscribe([(topics.topic("van-b", topics.DOCUMENTS), 1), (topics.topic("van-a", topics.ACK), 1)])
        # collectors may publish documents (retained) for B; A must never read them
        hub.client.publish(
            topics.topic("van-b", topics.DOCUMENTS), b"for B only", qos=1, retain=True
        ).wait_for_publish(10)
        a.publish(
            topics.topic("van-b", topics.TELEMETRY), batch("van-b", 1, 3, lon=900), qos=1
        ).wait_for_publish(10)
        a.publish(topics.COLLECTORS, b"online", qos=1).wait_for_publish(10)  # only collectors may
        a.publish(topics.topic("van-a", topics.TELEMETRY), batch("van-a", 1, 2), qos=1).wait_for_publish(10)
        assert wait_acked(store, "van-a", 2) == [1, 2]  # published after the spoof, stored: the spoof is gone
        acked = a_inbox.get(timeout=20)
        assert acked.topic == topics.topic("van-a", topics.ACK)
        assert stored_lons(store, "van-b") == []
        assert ingest.counts["batches"] == 1 and not ingest.rejects.as_dict()
        assert a_inbox.empty()  # neither B's document nor anything else
    finally:
        a.loop_stop()
        a.disconnect()
        hub.stop()
        store.close()


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_broker_refuses_clients_without_a_fleet_certificate(fleet: Path, tls_broker: Any, who: str) -> None:
    tls = None if who == "no certificate" else van_tls(fleet, "van-a", ca="rogue")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    ca = str(fleet / "fleet" / "ca.pem")
    if tls is None:
        client.tls_set(ca_certs=ca)
    else:
        client.tls_set(ca_certs=ca, certfile=str(tls.cert), keyfile=str(tls.key))
    connected, gone = threading.Event(), threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: None if rc.is_failure else connected.set()
    client.on_disconnect = lambda *_: gone.set()
    try:
        client.connect(tls_broker.host, tls_broker.port)
    except (ssl.SSLError, OSError):  # TLS 1.2: the handshake itself fails
        gone.set()
    client.loop_start()
    try:
        assert gone.wait(20), "the broker kept the connection"
        assert not connected.is_set()
    finally:
        client.loop_stop()


def test_the_agent_refuses_plaintext_unless_it_is_a_local_test(tmp_path: Path, fleet: Path) -> None:
    from agent.config import load
    from agent.runtime import Agent
    from protocols.errors import ConfigError

    outbox = tmp_path / "outbox.db"
    base = f'[vehicle]\nid = "van-a"\n[outbox]\npath = "{outbox}"\n[uplink]\ntransport = "grpc"\n'
    path = tmp_path / "agent.toml"
    path.write_text(base)
    with pytest.raises(ConfigError, match="plaintext to the collector is refused"):
        Agent(load(path))
    tls = van_tls(fleet, "van-a")
    path.write_text(base + f'tls_ca = "{tls.ca}"\ntls_cert = "{tls.cert}"\n')
    with pytest.raises(ConfigError, match="go together"):
        Agent(load(path))
    for extra in (
        "insecure_local_test = true\n",
        f'tls_ca = "{tls.ca}"\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n',
    ):
        path.write_text(base + extra)
        Agent(load(path)).outbox.close()
