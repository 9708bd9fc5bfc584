"""Fleet documents end to end: ``dropline config push`` through a real Mosquitto (mutual TLS,
the generated ACL) to a real agent, whose applied/refused report reaches a real collector.
One byte changed, a replayed older version, an expired document, another van's document and an
unknown key are each refused; the version survives a restart of the agent."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import load
from agent.runtime import Agent
from cloud.ingest import Ingest
from cloud.mqtt_ingest import MqttIngest
from cloud.store import SqliteStore
from dropline_cli import pki
from protocols import envelope
from protocols.mqtt_url import MqttTarget
from protocols.records import parse_iso_time
from protocols.tls import TlsFiles
from tests.brokers import run_mosquitto
from tests.conftest import free_port
from tests.pipeline_fixtures import ROOT, wait_until

pytestmark = pytest.mark.timeout(180)
TRACE = ROOT / "tests" / "cases" / "gps-gap" / "munich-gap.jsonl"
FLEET, STRANGER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def first_fix_time() -> float:
    with TRACE.open() as f:
        return parse_iso_time(json.loads(f.readline())["time"])


class Fleet:
    def __init__(self, root: Path, broker: Any, store: SqliteStore) -> None:
        self.root, self.broker, self.store = root, broker, store
        self.pub = root / "fleet-keys.pem"
        self.pub.write_bytes(envelope.public_pem(FLEET.public_key()))

    def agent(self, tmp: Path) -> Agent:
        d = self.root / "pki"
        text = f"""
[vehicle]
id = "van-a"
[outbox]
path = "{tmp / "outbox.db"}"
[uplink]
transport = "mqtt"
target = "mqtt://127.0.0.1:{self.broker.port}"
ack_timeout_s = 2
tls_ca = "{d / "ca.pem"}"
tls_cert = "{d / "vehicles" / "van-a.pem"}"
tls_key = "{d / "vehicles" / "van-a.key"}"
[documents]
trusted_keys = "{self.pub}"
[gps]
driver = "trace-file"
path = "{TRACE}"
replay_interval_s = 0.05
replay_repeat = 1000
"""
        (tmp / "agent.toml").write_text(text)
        return Agent(load(tmp / "agent.toml"))

    def push(self, data: bytes, vehicle: str = "van-a") -> None:
        path = self.root / "doc.signed"
        path.write_bytes(data)
        d = self.root / "pki"
        collector = d / "collectors" / "main"
        args = [
            "config",
            "push",
            str(path),
            "--vehicle",
            vehicle,
            "--mqtt",
            f"mqtt://127.0.0.1:{self.broker.port}",
        ]
        args += [
            "--tls-ca",
            str(d / "ca.pem"),
            "--tls-cert",
            f"{collector}.pem",
            "--tls-key",
            f"{collector}.key",
        ]
        subprocess.run(
            [sys.executable, "-m", "dropline_cli", *args],
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )

    def statuses(self) -> list[dict[str, Any]]:
        return list(self.store.export("document_status", "van-a"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    d = tmp_path / "pki"
    pki.init(d)
    pki.issue_vehicle(d, "van-a")
    pki.issue_collector(d, "main", ["localhost", "127.0.0.1"])
    port = free_port()
    conf = pki.mosquitto_conf(d, port, "127.0.0.1", ["localhost", "127.0.0.1"])["conf"].read_text()
    store = SqliteStore(tmp_path / "collector.db")
    tls = TlsFiles(d / "ca.pem", d / "collectors" / "main.pem", d / "collectors" / "main.key")
    with run_mosquitto(tmp_path, port, listener=conf) as broker:
        hub = MqttIngest(Ingest(store), MqttTarget("127.0.0.1", port), tls=tls)
        hub.start()
        try:
            assert hub.ready.wait(20)
            yield Fleet(tmp_path, broker, store)
        finally:
            hub.stop()
            store.close()


def running(van: Agent) -> threading.Thread:
    thread = threading.Thread(target=van.run, daemon=True)
    thread.start()
    return thread


def test_documents_applied_and_refused_end_to_end(fleet: Fleet, tmp_path: Path) -> None:
    t0 = first_fix_time()
    expires = t0 + 30 * 86400

    def doc(version: int, **kw: Any) -> bytes:
        args: dict[str, Any] = {"kind": "config", "version": version, "expires": expires, "vehicle": "van-a"}
        args.update(kw)
        key = args.pop("key", FLEET)
        body = f'[vehicle]\nid = "{args["vehicle"] or "van-a"}"\n'.encode()
        return envelope.sign(body, [key], **args)

    good = doc(5)
    flipped = bytearray(doc(6))
    flipped[40] ^= 1
    cases = [
        (good, True, ""),
        (bytes(flipped), False, "bad_signature"),
        (doc(4), False, "old_version"),
        (doc(7, expires=t0 - 1), False, "expired"),
        (doc(8, vehicle="van-b"), False, "wrong_vehicle"),
        (doc(9, key=STRANGER), False, "unknown_key"),
    ]
    work = tmp_path / "van"
    work.mkdir()
    van = fleet.agent(work)
    thread = running(van)
    try:
        for i, (data, applied, reason) in enumerate(cases, 1):
            fleet.push(data)
            wait_until(lambda i=i: len(fleet.statuses()) >= i, 60, f"status {i} at the collector")
            status = fleet.statuses()[-1]
            assert status["applied"] is applied and status.get("reason", "").startswith(reason), status
    finally:
        van.stop_requested.set()
        thread.join(30)
    assert (work / "documents" / "config.envelope").read_bytes() == good

    # A restart: the retained document (the unknown key's) comes again, then version 5 replayed
    van = fleet.agent(work)
    thread = running(van)
    try:
        wait_until(lambda: len(fleet.statuses()) >= len(cases) + 1, 60, "the retained document again")
        fleet.push(good)
        wait_until(lambda: len(fleet.statuses()) >= len(cases) + 2, 60, "the replay refused")
        assert fleet.statuses()[-1]["reason"].startswith("old_version")
        fleet.push(doc(10))
        wait_until(lambda: len(fleet.statuses()) >= len(cases) + 3, 60, "version 10")
        assert fleet.statuses()[-1]["applied"] is True
    finally:
        van.stop_requested.set()
        thread.join(30)
