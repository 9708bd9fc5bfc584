"""Fault tests of the whole pipeline: a real agent process and a real collector (gRPC server or
MQTT through Mosquitto) on loopback, real SQLite files on both sides, and the faults of the
road: kill -9, a broker or collector gone for a while, a black-holed link, a collector that
crashes between commit and ack, a disk budget filled offline, acks lost, doubled and reordered.

Each test drives a known stream (the Munich drive from tests/data/traces, the Kona EV CAN log,
the scanner strings) and ends by comparing the collector's store with the agent's outbox record
by record: nothing missing, nothing twice, gaps only where the budget evicted telemetry.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloud.grpc_server import SERVICE, StreamLimits, StreamTable, UplinkServicer, server_options
from cloud.ingest import Ingest
from cloud.store import SqliteStore
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.brokers import run_mosquitto
from tests.netproxy import BlackholeProxy
from tests.pipeline_fixtures import (
    DATA,
    Proc,
    agent,
    agent_config,
    collector,
    export,
    free_port,
    load_barefoot,
    outbox_acked,
    outbox_count,
    outbox_records,
    outbox_unacked,
    wait_until,
    write_trace,
)

VEHICLE = "van-042"
PRIORITY = ("scan", "alert", "gap")


def sources(tmp: Path, *, repeat: int = 1, fix_interval_s: float = 0.0, scan_interval_s: float = 0.0) -> str:
    """The known stream: the Munich drive, the Kona EV CAN log (P-CAN), the scanner strings."""
    trace = write_trace(load_barefoot(), tmp / "munich.jsonl")
    can = DATA / "can" / "kona_ev"
    return f"""
[gps]
driver = "trace-file"
path = "{trace}"
replay_repeat = {repeat}
replay_interval_s = {fix_interval_s}

[can]
driver = "can-log"
dbc = "{can / "pcan.dbc"}"
mapping = "kona_ev"
path = "{can / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"}"

[scanner]
driver = "scan-file"
path = "{DATA / "barcodes" / "scans_raw.txt"}"
replay_interval_s = {scan_interval_s}
"""


def config(
    tmp: Path, transport: str, target: str, src: str, ack_timeout_s: float = 3.0, **outbox: Any
) -> Path:
    uplink = {"ack_timeout_s": ack_timeout_s, "keepalive_s": 2.0, "batch_records": 500}
    return agent_config(
        tmp,
        VEHICLE,
        transport,
        target,
        sources=src,
        outbox={"retain_acked": 10_000_000, **outbox},
        uplink=uplink,
    )


def outbox_settled(tmp: Path, quiet_s: float = 2.0) -> Any:
    """A predicate: everything acked and no new record for ``quiet_s`` (the replay is over)."""
    seen = {"count": -1, "since": time.monotonic()}

    def settled() -> bool:
        try:
            count = outbox_count(tmp / "outbox.db")
            unacked = outbox_unacked(tmp / "outbox.db")
        except Exception:  # the agent may be mid-way through creating the file
            return False
        if count != seen["count"]:
            seen["count"], seen["since"] = count, time.monotonic()
            return False
        return unacked == 0 and time.monotonic() - seen["since"] >= quiet_s

    return settled


def compare(
    tmp: Path, db: Path, kinds: tuple[str, ...] = ("fix", "signal", "scan")
) -> dict[int, dict[str, Any]]:
    """The collector holds exactly what the agent committed, record by record."""
    committed = outbox_records(tmp / "outbox.db")
    stored: dict[int, dict[str, Any]] = {}
    for row in export(db):
        assert row.pop("vehicle") == VEHICLE
        assert row["seq"] not in stored, f"seq {row['seq']} stored twice"
        stored[row["seq"]] = row
    missing = sorted(set(committed) - set(stored))
    extra = sorted(set(stored) - set(committed))
    different = [s for s in committed.keys() & stored.keys() if committed[s] != stored[s]]
    assert not missing, f"{len(missing)} committed records never reached the collector: {missing[:10]}"
    assert not extra, f"{len(extra)} stored records the agent never committed: {extra[:10]}"
    assert not different, (
        f"{len(different)} records differ, e.g. {committed[different[0]]} vs {stored[different[0]]}"
    )
    progress = next(v for v in export(db, "vehicles") if v["vehicle"] == VEHICLE)
    assert progress["open_gaps"] == [], progress
    assert progress["contiguous"] == max(committed), progress
    assert set(kinds) <= {r["kind"] for r in committed.values()}
    return committed


def drain_and_stop(tmp: Path, van: Proc, timeout: float = 120.0) -> None:
    wait_until(outbox_settled(tmp), timeout, f"the agent's outbox to drain\n{van.tail()}")
    van.stop()
    assert outbox_unacked(tmp / "outbox.db") == 0


def acked_count(tmp: Path) -> int:
    try:
        return outbox_acked(tmp / "outbox.db")
    except Exception:  # the agent may be mid-way through creating the file
        return 0


# 1 -------------------------------------------------------------------------------------------


def test_kill_9_of_the_agent_20_times_during_heavy_upload(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "collector.db"
    hub = collector(tmp_path, db, grpc_port=port)
    cfg = config(tmp_path, "grpc", f"127.0.0.1:{port}", sources(tmp_path, repeat=10))
    rng = random.Random(20261125)
    try:
        for _ in range(20):
            van = agent(tmp_path, cfg)
            time.sleep(rng.uniform(0.4, 2.0))
            van.kill9()
        van = agent(tmp_path, cfg)
        drain_and_stop(tmp_path, van, timeout=240)
    finally:
        hub.stop()
    committed = compare(tmp_path, db)
    assert len(committed) > 5_000  # the sources ten times over (fewer with a compaction bound)


# 2 -------------------------------------------------------------------------------------------


def test_broker_down_for_60_s_then_back(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    with run_mosquitto(tmp_path) as broker:
        hub = Proc(
            ["collector", "--db", str(db), "--mqtt", broker.url, "--client-id", "hub-1"],
            tmp_path / "collector.log",
        ).start()
        # The default ack timeout (10 s): the van must resume sooner, when the collector is back.
        cfg = config(
            tmp_path, "mqtt", broker.url, sources(tmp_path, repeat=2, fix_interval_s=0.03), ack_timeout_s=10.0
        )
        van = agent(tmp_path, cfg)
        try:
            wait_until(lambda: acked_count(tmp_path) > 100, 90, "the first acks")
            broker.stop()
            time.sleep(60)
            before = acked_count(tmp_path)
            broker.start()
            back = time.monotonic()
            wait_until(lambda: acked_count(tmp_path) > before, 15, "upload to resume")
            resumed_after = time.monotonic() - back
            print(f"upload resumed {resumed_after:.1f} s after the broker returned")
            assert resumed_after < 5.0, f"upload resumed {resumed_after:.1f} s after the broker returned"
            drain_and_stop(tmp_path, van, timeout=180)
        finally:
            van.stop()
            hub.stop()
    compare(tmp_path, db)


def test_collector_down_then_back(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "collector.db"
    hub = collector(tmp_path, db, grpc_port=port)
    van = agent(
        tmp_path, config(tmp_path, "grpc", f"127.0.0.1:{port}", sources(tmp_path, fix_interval_s=0.004))
    )
    try:
        wait_until(lambda: acked_count(tmp_path) > 200, 90, "the first acks")
        hub.kill9()
        time.sleep(8)
        hub = collector(tmp_path, db, grpc_port=port)
        time.sleep(1)
        hub.stop()  # a clean stop too, mid-stream
        time.sleep(3)
        hub = collector(tmp_path, db, grpc_port=port)
        drain_and_stop(tmp_path, van)
    finally:
        van.stop()
        hub.stop()
    compare(tmp_path, db)


def test_batches_published_before_any_collector_subscribed_are_resent_when_one_does(tmp_path: Path) -> None:
    """After a broker restart the vans often reconnect before the collector: what they publish
    then reaches no one. They resend when the collector announces itself, not after the ack
    timeout (a minute here, so only the announcement can make the 5 s)."""
    db = tmp_path / "collector.db"
    with run_mosquitto(tmp_path) as broker:
        van = agent(tmp_path, config(tmp_path, "mqtt", broker.url, sources(tmp_path), ack_timeout_s=60.0))
        try:
            wait_until(lambda: "uplink connected" in van.tail(), 30, "the van to connect")
            wait_until(lambda: _outbox_size(tmp_path) > 1000, 30, "records to publish into the void")
            time.sleep(1.0)
            assert acked_count(tmp_path) == 0
            hub = Proc(
                ["collector", "--db", str(db), "--mqtt", broker.url], tmp_path / "collector.log"
            ).start()
            appeared = time.monotonic()
            wait_until(lambda: acked_count(tmp_path) > 0, 15, "upload to start")
            started_after = time.monotonic() - appeared
            print(f"upload started {started_after:.1f} s after the collector was launched")
            assert started_after < 5.0, f"upload started {started_after:.1f} s after the collector appeared"
            drain_and_stop(tmp_path, van)
            hub.stop()
        finally:
            van.stop()
    compare(tmp_path, db)


def _outbox_size(tmp: Path) -> int:
    try:
        return outbox_count(tmp / "outbox.db")
    except Exception:  # the agent may be mid-way through creating the file
        return 0


@pytest.mark.parametrize("transport", ["grpc", "mqtt"])
def test_network_black_holed_with_the_process_alive(tmp_path: Path, transport: str) -> None:
    db = tmp_path / "collector.db"
    with run_mosquitto(tmp_path) as broker:
        if transport == "grpc":
            port = free_port()
            hub = collector(tmp_path, db, grpc_port=port)
        else:
            port = broker.port
            hub = Proc(
                ["collector", "--db", str(db), "--mqtt", broker.url], tmp_path / "collector.log"
            ).start()
        proxy = BlackholeProxy(port)
        target = f"127.0.0.1:{proxy.port}" if transport == "grpc" else f"mqtt://127.0.0.1:{proxy.port}"
        van = agent(
            tmp_path, config(tmp_path, transport, target, sources(tmp_path, repeat=2, fix_interval_s=0.01))
        )
        try:
            wait_until(lambda: acked_count(tmp_path) > 200, 90, "the first acks")
            proxy.blackhole()
            time.sleep(1.0)
            stalled = acked_count(tmp_path)
            time.sleep(15)
            assert acked_count(tmp_path) == stalled, "records were acked through a black hole"
            proxy.restore()
            back = time.monotonic()
            wait_until(lambda: acked_count(tmp_path) > stalled, 15, "upload to resume")
            resumed_after = time.monotonic() - back
            print(f"upload resumed {resumed_after:.1f} s after the network returned ({transport})")
            assert resumed_after < 5.0, f"upload resumed {resumed_after:.1f} s after the network returned"
            drain_and_stop(tmp_path, van)
        finally:
            van.stop()
            proxy.close()
            hub.stop()
    compare(tmp_path, db)


# 3 -------------------------------------------------------------------------------------------


def test_collector_crashes_after_commit_before_ack(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "collector.db"
    van = agent(tmp_path, config(tmp_path, "grpc", f"127.0.0.1:{port}", sources(tmp_path)))
    try:
        for commits in (3, 7, 2):
            hub = Proc(
                [
                    "collector",
                    "--db",
                    str(db),
                    "--grpc",
                    f"127.0.0.1:{port}",
                    "--exit-after-commits",
                    str(commits),
                ],
                tmp_path / "collector.log",
            ).start()
            assert hub.proc is not None
            assert hub.proc.wait(60) == 70, hub.tail()  # died right after a commit, before its ack
        hub = collector(tmp_path, db, grpc_port=port)
        drain_and_stop(tmp_path, van)
        hub.stop()
    finally:
        van.stop()
    stats = [json.loads(line) for line in hub.log.read_text().splitlines() if line.startswith('{"stopped"')]
    assert stats and stats[-1]["duplicates"] > 0, (
        "the resent, already stored batches were not seen as duplicates"
    )
    compare(tmp_path, db)


# 4 -------------------------------------------------------------------------------------------


def test_disk_budget_filled_during_two_hours_offline(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "collector.db"
    budget = 150_000
    # 6 passes of the 20-minute drive: two hours of fixes, with every CAN signal and scan.
    cfg = config(tmp_path, "grpc", f"127.0.0.1:{port}", sources(tmp_path, repeat=6), disk_budget_bytes=budget)
    van = agent(tmp_path, cfg)
    try:
        wait_until(_replay_done(tmp_path), 120, "the offline replay")
        records = outbox_records(tmp_path / "outbox.db")
        gaps = [r for r in records.values() if r["kind"] == "gap"]
        assert gaps and all(g["reason"] == "disk_budget" for g in gaps)
        assert (tmp_path / "outbox.db").stat().st_size < budget * 1.6
        hub = collector(tmp_path, db, grpc_port=port)
        drain_and_stop(tmp_path, van)
        hub.stop()
    finally:
        van.stop()
    committed = compare(
        tmp_path, db, kinds=("scan", "gap")
    )  # which telemetry is oldest depends on the replay
    scans = [r for r in committed.values() if r["kind"] == "scan"]
    assert len(scans) == 286, "every delivery scan survives the budget"
    top = max(committed)
    missing = set(range(1, top + 1)) - set(committed)
    explained = {s for g in gaps for s in range(g["from_seq"], g["to_seq"] + 1)}
    assert missing and missing <= explained, "evicted telemetry must be reported as gaps"
    progress = next(v for v in export(db, "vehicles") if v["vehicle"] == VEHICLE)
    assert progress["explained_gaps"]


def _replay_done(tmp: Path) -> Any:
    """Offline, nothing is acked: the replay is done when the outbox stops changing."""
    seen = {"top": -1, "since": time.monotonic()}

    def done() -> bool:
        try:
            top = max(outbox_records(tmp / "outbox.db"), default=0)
        except Exception:
            return False
        if top != seen["top"]:
            seen["top"], seen["since"] = top, time.monotonic()
            return False
        return time.monotonic() - seen["since"] > 3.0

    return done


# 5 -------------------------------------------------------------------------------------------


class ChaoticAcks(UplinkServicer):
    """The real ingest and store, with the acks on the way back lost, doubled and reordered."""

    def __init__(self, ingest: Ingest, seed: int) -> None:
        super().__init__(ingest, StreamTable(StreamLimits()))
        self.rng = random.Random(seed)
        self.lost = self.doubled = self.reordered = 0
        self._lock = threading.Lock()

    def Stream(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[pb.Downlink]:
        held: list[pb.Downlink] = []
        for ack in super().Stream(request_iterator, context):
            with self._lock:
                roll = self.rng.random()
            if roll < 0.25:
                self.lost += 1
                continue
            if roll < 0.45:
                self.doubled += 1
                yield ack
                yield ack
                continue
            if roll < 0.7:
                self.reordered += 1
                held.append(ack)
                continue
            yield ack
            while held:
                yield held.pop()


def test_acks_lost_duplicated_and_reordered(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    store = SqliteStore(db)
    ingest = Ingest(store)
    chaos = ChaoticAcks(ingest, seed=7)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=server_options(ingest.limits))
    handlers = {
        "Stream": grpc.stream_stream_rpc_method_handler(
            chaos.Stream, request_deserializer=None, response_serializer=pb.Downlink.SerializeToString
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    van = agent(tmp_path, config(tmp_path, "grpc", f"127.0.0.1:{port}", sources(tmp_path)))
    try:
        drain_and_stop(tmp_path, van, timeout=180)
    finally:
        van.stop()
        server.stop(1).wait()
        store.close()
    assert chaos.lost and chaos.doubled and chaos.reordered
    compare(tmp_path, db)
