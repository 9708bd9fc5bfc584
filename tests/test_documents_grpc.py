"""Documents down the gRPC stream: ``dropline config push --db`` leaves a signed envelope in the
collector's pushed-documents table; a real collector's gRPC stream sends the newest per kind to
the van it is bound to, on bind and on a later push; a real agent (GrpcTransport, plaintext
loopback) checks and applies it and its status reaches the collector's store."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import load
from agent.runtime import Agent
from cloud.collector import Collector
from cloud.documents import PushedDocuments, path_for
from protocols import envelope
from protocols.records import parse_iso_time
from tests.conftest import free_port
from tests.pipeline_fixtures import ROOT, agent_config, wait_until

pytestmark = pytest.mark.timeout(120)
TRACE = ROOT / "tests" / "cases" / "gps-gap" / "munich-gap.jsonl"
FLEET = Ed25519PrivateKey.generate()


def config_doc(version: int, vehicle: str) -> bytes:
    with TRACE.open() as f:
        expires = parse_iso_time(json.loads(f.readline())["time"]) + 86400
    body = f'[vehicle]\nid = "{vehicle}"\n'.encode()
    return envelope.sign(body, [FLEET], kind="config", version=version, expires=expires, vehicle=vehicle)


def push(tmp: Path, db: Path, data: bytes, vehicle: str) -> None:
    path = tmp / "doc.signed"
    path.write_bytes(data)
    args = ["config", "push", str(path), "--vehicle", vehicle, "--db", str(db)]
    subprocess.run([sys.executable, "-m", "dropline_cli", *args], check=True, capture_output=True, cwd=ROOT)


def statuses(collector: Collector, vehicle: str) -> list[dict[str, Any]]:
    return list(collector.store.export("document_status", vehicle))


def test_pushed_documents_go_down_the_grpc_stream(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    addr = f"127.0.0.1:{free_port()}"
    pem = tmp_path / "fleet.pem"
    pem.write_bytes(envelope.public_pem(FLEET.public_key()))
    sources = f"""
[gps]
driver = "trace-file"
path = "{TRACE}"
replay_interval_s = 0.05
replay_repeat = 1000

[documents]
trusted_keys = "{pem}"
"""
    van_dir = tmp_path / "van"
    van_dir.mkdir()
    config = agent_config(van_dir, "van-g", "grpc", addr, sources=sources, uplink={"ack_timeout_s": 2})
    with Collector(db, grpc_addr=addr) as collector:
        push(tmp_path, db, config_doc(3, "van-g"), "van-g")  # before the van connects: sent on bind
        push(tmp_path, db, config_doc(9, "van-h"), "van-h")  # another van's: never sent to van-g
        van = Agent(load(config))
        thread = threading.Thread(target=van.run)
        thread.start()
        try:
            wait_until(lambda: len(statuses(collector, "van-g")) >= 1, 60, "the status of version 3")
            push(tmp_path, db, config_doc(4, "van-g"), "van-g")  # while the stream is open
            wait_until(lambda: len(statuses(collector, "van-g")) >= 2, 60, "the status of version 4")
        finally:
            van.stop_requested.set()
            thread.join(30)
        got = [(s["version"], s["applied"]) for s in statuses(collector, "van-g")]
        assert got == [(3, True), (4, True)]
        assert van.uplink is not None and van.uplink.stats.documents == 2  # newest once each, no more
        assert (van_dir / "documents" / "config.envelope").read_bytes() == config_doc_bytes(db, "van-g")


def config_doc_bytes(db: Path, vehicle: str) -> bytes:
    table = PushedDocuments(path_for(db))
    try:
        ((_, kind, data),) = table.newest(vehicle)
        assert kind == "config"
        return data
    finally:
        table.close()


def test_newest_per_kind(tmp_path: Path) -> None:
    table = PushedDocuments(tmp_path / "x.documents")
    ids = [table.push("v", kind, bytes([i])) for i, kind in enumerate(["config", "manifest", "config"])]
    table.push("w", "config", b"w")
    assert table.newest("v") == [(ids[1], "manifest", b"\x01"), (ids[2], "config", b"\x02")]
    assert table.newest("nobody") == []
    table.close()
