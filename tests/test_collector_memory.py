"""A flood of large batches through a real Mosquitto into a real ``dropline collector`` process:
its resident memory stays bounded (the broker holds what the collector has not taken yet) and
every batch is eventually stored."""

from __future__ import annotations

import os
import queue
import signal
import time
import uuid
from pathlib import Path

import pytest
from paho.mqtt.client import Client, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from protocols import topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.brokers import run_mosquitto
from tests.test_collector_mqtt import CollectorProcess, export

pytestmark = pytest.mark.timeout(300)
T0 = 1_700_000_000_000

BATCHES = 60
RECORDS = 1_900  # of ~2 KiB each: just under the collector's 4 MiB batch limit
RSS_BOUND_MIB = 200
"""Peak resident memory allowed: about 45 MiB of interpreter and libraries, 8 MiB of batches in
hand (``INFLIGHT_BYTES``: two of 4 MiB), their decoded records and copies, and SQLite's cache
(measured: 181 MiB). With 64 batches in flight, as before the bound, the same flood peaked at
314 MiB."""


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_a_flood_of_large_batches_keeps_memory_bounded_and_loses_nothing(tmp_path: Path) -> None:
    noise = os.urandom(RECORDS * 1_000).hex()  # incompressible, like a van's packed batch
    acks: queue.Queue[pb.Ack] = queue.Queue()
    with run_mosquitto(tmp_path, extra_config="message_size_limit 0\n") as broker:
        db = tmp_path / "c.db"
        proc = CollectorProcess(["--db", str(db), "--mqtt", broker.url], tmp_path / "collector.log")
        try:
            assert proc.line()["mqtt_subscribed"] is True
            van = Client(
                CallbackAPIVersion.VERSION2, client_id=f"van-{uuid.uuid4().hex[:8]}", protocol=MQTTv311
            )
            van.on_message = lambda c, u, m: acks.put(pb.Ack.FromString(bytes(m.payload)))
            van.connect(broker.host, broker.port, keepalive=30)
            van.loop_start()
            van.subscribe(topics.topic("van-1", topics.ACK), qos=1)
            infos = []
            for b in range(BATCHES):
                records = [
                    pb.Record(
                        seq=b * RECORDS + i + 1,
                        scan=pb.Scan(time_ms=T0 + i, raw=noise[i * 2_000 : (i + 1) * 2_000], kind="unknown"),
                    ).SerializeToString()
                    for i in range(RECORDS)
                ]
                data = wire.encode_batch("van-1", b + 1, records)
                assert 3_800_000 < len(data) <= 4 * 1024 * 1024
                infos.append(van.publish(topics.topic("van-1", topics.TELEMETRY), data, qos=1))
            for info in infos:
                info.wait_for_publish(60)  # all of it is at the broker now
            stored: set[int] = set()
            deadline = time.monotonic() + 240
            while len(stored) < BATCHES:
                ack = acks.get(timeout=max(0.1, deadline - time.monotonic()))
                assert not ack.rejected and not ack.quarantined, ack
                stored.add(ack.batch_id)
            peak = _peak_rss_mib(proc.proc.pid)
            print(f"collector peak RSS with {BATCHES} x 4 MB batches in flood: {peak:.0f} MiB")
            assert peak < RSS_BOUND_MIB
            van.disconnect()
            van.loop_stop()
            proc.proc.send_signal(signal.SIGTERM)
            assert proc.line(timeout=30)["stopped"] is True
            assert proc.proc.wait(30) == 0
        finally:
            proc.stop()
    [vehicle] = export(db, "vehicles")
    assert (vehicle["records"], vehicle["contiguous"], vehicle["open_gaps"]) == (
        BATCHES * RECORDS,
        BATCHES * RECORDS,
        [],
    )
