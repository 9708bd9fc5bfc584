"""The van's own gRPC client (h2, no grpcio) against grpcio's server on loopback: flow control on
batches far larger than HTTP/2's first window, keep-alive that the server's ping policy accepts,
a silent collector noticed, a failed call's status reported, an unreadable downlink skipped."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from agent.transport_grpc import GrpcTransport, split_target
from cloud.grpc_server import serve_grpc
from cloud.ingest import Ingest
from cloud.store import SqliteStore
from protocols import wire
from protocols.downlink import Ack, Downlink
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import ConfigError, TransportError
from protocols.grpc_method import SERVICE, STREAM_METHOD
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)
T0 = 1_700_000_000_000


def fixes(vehicle: str, first: int, n: int, pad: int = 0) -> bytes:
    """``n`` records: fixes, or with ``pad`` scans of ``pad`` characters each."""
    records = [
        pb.Record(seq=s, scan=pb.Scan(time_ms=T0 + s * 1000, raw=f"{s:0{pad}d}", kind="unknown"))
        if pad
        else pb.Record(seq=s, fix=pb.Fix(time_ms=T0 + s * 1000, mode=3, lat_e7=481_000_000 + s, lon_e7=s))
        for s in range(first, first + n)
    ]
    return wire.encode_batch(vehicle, first, [r.SerializeToString() for r in records])


def ack_of(transport: GrpcTransport, timeout: float = 20.0) -> Ack:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in transport.receive(0.5):
            if message.ack is not None:
                return message.ack
    raise TimeoutError("no ack")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, SqliteStore]]:
    store = SqliteStore(tmp_path / "collector.db")
    addr = f"127.0.0.1:{free_port()}"
    server = serve_grpc(Ingest(store), addr)
    try:
        yield addr, store
    finally:
        server.stop(0).wait()
        store.close()


def test_a_batch_of_megabytes_flows_through_http2_flow_control(collector: tuple[str, SqliteStore]) -> None:
    addr, store = collector
    transport = GrpcTransport(addr, keepalive_s=2.0)
    transport.connect(10)
    try:
        big = fixes("van-big", 1, 3_000, pad=1000)  # 3 MB: 46 times HTTP/2's first window
        assert len(big) > 3_000_000
        transport.send(big)
        ack = ack_of(transport)
        transport.send(fixes("van-big", 3_001, 10))
        second = ack_of(transport)
    finally:
        transport.close()
    assert [(r.first, r.last) for r in ack.stored] == [(1, 3_000)]
    assert [(r.first, r.last) for r in second.stored] == [(3_001, 3_010)]
    assert len(list(store.export("scans", "van-big"))) == 3_000
    assert len(list(store.export("fixes", "van-big"))) == 10


def test_keepalive_pings_on_an_idle_stream_stay_within_the_servers_ping_policy(tmp_path: Path) -> None:
    """A server that allows one ping a second without data and GOAWAYs the second strike: a van
    pinging every 1.2 s of silence stays connected through 8 idle seconds."""
    store = SqliteStore(tmp_path / "collector.db")
    addr = f"127.0.0.1:{free_port()}"
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 1),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    from cloud.grpc_server import StreamLimits, StreamTable, add_uplink

    streams = StreamTable(StreamLimits())
    add_uplink(server, Ingest(store), streams, mutual_tls=False)
    server.add_insecure_port(addr)
    server.start()
    transport = GrpcTransport(addr, keepalive_s=1.2)
    try:
        transport.connect(10)
        transport.send(fixes("van-idle", 1, 3))
        ack_of(transport)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert transport.receive(0.5) == []  # raises TransportError if the server cut us off
        transport.send(fixes("van-idle", 4, 3))
        assert [(r.first, r.last) for r in ack_of(transport).stored] == [(4, 6)]
    finally:
        transport.close()
        server.stop(0).wait()
        streams.stop()
        store.close()


def test_a_collector_that_accepts_but_never_answers_is_declared_broken() -> None:
    """TCP up, HTTP/2 silent (a black hole after the handshake): noticed in about 2 x keepalive."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    transport = GrpcTransport(f"127.0.0.1:{listener.getsockname()[1]}", keepalive_s=0.5)
    transport.connect(5)
    started = time.monotonic()
    try:
        with pytest.raises(TransportError, match="keep-alive"):
            while time.monotonic() - started < 10:
                transport.receive(0.2)
        assert time.monotonic() - started < 3.0
    finally:
        transport.close()
        listener.close()
        for s in accepted:
            s.close()


def test_a_call_the_server_refuses_reports_its_grpc_status() -> None:
    """A gRPC server without our service answers trailers-only UNIMPLEMENTED (12)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    transport = GrpcTransport(f"127.0.0.1:{port}", keepalive_s=2.0)
    try:
        transport.connect(5)
        with pytest.raises(TransportError, match="status 12"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                transport.receive(0.2)
    finally:
        transport.close()
        server.stop(0).wait()


def test_an_unreadable_downlink_message_is_skipped_and_the_stream_goes_on() -> None:
    """A collector (here a bare grpcio handler) sends garbage, then an announcement."""

    def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        next(requests)
        yield b"\x0a\xff\xff"  # field 1 (ack), length far past the end
        yield b"\x18\x01"  # collector_online = true

    method = grpc.stream_stream_rpc_method_handler(stream, lambda b: b, lambda b: b)
    handler = grpc.method_handlers_generic_handler(SERVICE, {STREAM_METHOD.rpartition("/")[2]: method})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    transport = GrpcTransport(f"127.0.0.1:{port}", keepalive_s=2.0)
    try:
        transport.connect(5)
        transport.send(fixes("van-x", 1, 1))
        got: list[Downlink] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = transport.receive(0.5)
        assert got == [Downlink(collector_online=True)]
    finally:
        transport.close()
        server.stop(0).wait()


def test_a_collector_that_is_not_there_is_a_transport_error_not_a_hang() -> None:
    transport = GrpcTransport(f"127.0.0.1:{free_port()}")
    with pytest.raises(TransportError, match="not reachable"):
        transport.connect(2)
    transport.close()


@pytest.mark.parametrize("target", ["nohost", "host:", ":50051", "host:99999", "host:port"])
def test_a_target_that_is_not_host_and_port_is_a_config_error(target: str) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        split_target(target)


def test_ipv6_targets_lose_their_brackets() -> None:
    assert split_target("[::1]:50051") == ("::1", 50051)
    assert split_target("collector.example:443") == ("collector.example", 443)
