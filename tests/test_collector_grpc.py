"""A real gRPC collector on a free loopback port and real client streams: batches up, acks down;
hostile batches are answered with a rejected Ack (a bad record inside a readable batch with a
quarantine) and neither the stream nor other vans suffer."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloud.grpc_server import StreamLimits, peer_address, serve_grpc, stream_method
from cloud.ingest import Ingest, Limits
from cloud.store import SqliteStore
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.dropline.v1 import dropline_pb2_grpc as pb_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)
T0 = 1_700_000_000_000


def batch(vehicle: str, first: int, n: int, batch_id: int = 0) -> bytes:
    records = [
        pb.Record(
            seq=s, fix=pb.Fix(time_ms=T0 + s * 1000, mode=3, lat_e7=481_000_000, lon_e7=s)
        ).SerializeToString()
        for s in range(first, first + n)
    ]
    return wire.encode_batch(vehicle, batch_id or first, records, compress=True)


class Van:
    """One client stream sending raw batch bytes, as the agent's gRPC transport does."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self.responses: Any = stream_method(channel)(self._requests())

    def _requests(self) -> Iterator[bytes]:
        while (item := self._out.get()) is not None:
            yield item

    def send(self, data: bytes) -> pb.Ack:
        self._out.put(data)
        ack: pb.Ack = next(self.responses).ack
        return ack

    def close(self) -> None:
        self._out.put(None)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Ingest]]:
    store = SqliteStore(tmp_path / "collector.db")
    ingest = Ingest(store, Limits(max_bytes=256 * 1024, max_records=5000))
    addr = f"127.0.0.1:{free_port()}"
    server = serve_grpc(ingest, addr, limits=StreamLimits(per_peer=32))  # every test van is 127.0.0.1
    try:
        yield addr, ingest
    finally:
        server.stop(1).wait()
        store.close()


@pytest.fixture
def channel(collector: tuple[str, Ingest]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(collector[0]) as ch:
        yield ch


def ranges(ack: pb.Ack) -> list[tuple[int, int]]:
    return [(r.first, r.last) for r in ack.stored]


def test_batches_up_acks_down_in_any_order(collector: tuple[str, Ingest], channel: grpc.Channel) -> None:
    van = Van(channel)
    acks = [van.send(batch("van-1", first, 1000)) for first in (2001, 1, 1001, 1)]  # newest first, a retry
    van.close()
    assert [a.batch_id for a in acks] == [2001, 1, 1001, 1]
    assert [ranges(a) for a in acks] == [[(2001, 3000)], [(1, 1000)], [(1001, 2000)], [(1, 1000)]]
    assert [a.contiguous for a in acks] == [0, 1000, 3000, 3000]
    progress = collector[1].store.vehicles()
    assert [(p.vehicle, p.records, p.contiguous, p.open_gaps) for p in progress] == [
        ("van-1", 3000, 3000, [])
    ]


def test_generated_stub_with_batch_messages_works_too(
    collector: tuple[str, Ingest], channel: grpc.Channel
) -> None:
    stub = pb_grpc.UplinkStub(channel)
    messages = [pb.Batch.FromString(batch("van-1", first, 10)) for first in (1, 11)]
    acks = [d.ack for d in stub.Stream(iter(messages), timeout=10)]
    assert [ranges(a) for a in acks] == [[(1, 10)], [(11, 20)]]


def test_hostile_batches_do_not_break_the_stream_or_other_vans(
    collector: tuple[str, Ingest], channel: grpc.Channel
) -> None:
    ingest = collector[1]
    van1, van2 = Van(channel), Van(channel)
    assert ranges(van1.send(batch("van-1", 1, 100))) == [(1, 100)]
    assert ranges(van2.send(batch("van-2", 1, 100))) == [(1, 100)]

    garbage = van1.send(b"\x08\x96\x01 this is not a batch \xff\xff")
    assert garbage.rejected and garbage.reason == "undecodable"
    big = wire.encode_batch("van-1", 9, [b"\x08\x01" + b"\x00" * 100] * 4000)  # over the ingest limit
    oversized = van1.send(big)
    assert oversized.rejected and oversized.reason == "oversized"
    impostor = van1.send(batch("van-2", 101, 10))  # the stream belongs to van-1 since its first batch
    assert impostor.rejected and impostor.reason == "vehicle_mismatch" and impostor.vehicle == "van-1"
    seq0 = van1.send(
        wire.encode_batch("van-1", 5, [pb.Record(seq=0, fix=pb.Fix(time_ms=T0)).SerializeToString()])
    )
    assert not seq0.rejected and [(q.first, q.last, q.reason) for q in seq0.quarantined] == [
        (0, 0, "bad_seq")
    ]

    assert ranges(van1.send(batch("van-1", 101, 100))) == [(101, 200)]
    assert ranges(van2.send(batch("van-2", 101, 100))) == [(101, 200)]
    van1.close()
    van2.close()
    assert ingest.rejects.as_dict() == {"undecodable": 1, "oversized": 1, "vehicle_mismatch": 1}
    assert ingest.quarantine.as_dict() == {"bad_seq": 1}
    assert [(p.vehicle, p.records) for p in ingest.store.vehicles()] == [("van-1", 200), ("van-2", 200)]


def test_message_beyond_the_transport_limit_ends_only_that_stream(
    collector: tuple[str, Ingest], channel: grpc.Channel
) -> None:
    """gRPC itself refuses a message far over the limit (it would have to buffer it whole): that
    stream fails with RESOURCE_EXHAUSTED; the van reconnects; everyone else carries on."""
    van1, van2 = Van(channel), Van(channel)
    assert ranges(van2.send(batch("van-2", 1, 10))) == [(1, 10)]
    with pytest.raises(grpc.RpcError) as failure:
        van1.send(b"\x0a\x05van-1" + b"\x1a\x00" * (1024 * 1024))  # 2 MB
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ranges(van2.send(batch("van-2", 11, 10))) == [(11, 20)]
    again = Van(channel)
    assert ranges(again.send(batch("van-1", 1, 10))) == [(1, 10)]
    again.close()
    van2.close()


def test_many_vans_at_once(collector: tuple[str, Ingest], channel: grpc.Channel) -> None:
    vans = {f"van-{i:02d}": Van(channel) for i in range(20)}
    for round_ in range(3):
        for name, van in vans.items():
            assert ranges(van.send(batch(name, 1 + 50 * round_, 50))) == [
                (1 + 50 * round_, 50 * (round_ + 1))
            ]
    for van in vans.values():
        van.close()
    progress = collector[1].store.vehicles()
    assert len(progress) == 20 and all(p.contiguous == 150 and p.records == 150 for p in progress)


# -- hostile clients: idle streams --------------------------------------------------------------


def _idle_requests(stop: threading.Event) -> Iterator[bytes]:
    stop.wait(120)  # a stream that never sends a batch
    return
    yield b""


def _ack_within(channel: grpc.Channel, data: bytes, deadline_s: float) -> pb.Ack:
    """Send one batch as a van does: a new stream, retried after a failure, until the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            downlinks = stream_method(channel)(iter([data]), timeout=max(0.1, deadline - time.monotonic()))
            ack: pb.Ack = next(iter(downlinks)).ack
            return ack
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no ack within {deadline_s} s: {exc.code()}") from exc
            time.sleep(0.2)


def test_200_idle_streams_from_one_client_do_not_lock_a_van_out(tmp_path: Path) -> None:
    """One client holds 200 streams open and sends nothing (128 used to lock every van out with
    RESOURCE_EXHAUSTED until they went away). A van on its own connection is still acked at once:
    the idle streams are ended to make room, and those from one address are capped."""
    store = SqliteStore(tmp_path / "c.db")
    ingest = Ingest(store)
    addr = f"127.0.0.1:{free_port()}"
    server = serve_grpc(ingest, addr)  # the production limits: 128 streams, 16 per address
    stop = threading.Event()
    try:
        own = [("grpc.use_local_subchannel_pool", 1)]  # two processes' connections, not one shared
        with (
            grpc.insecure_channel(addr, options=own) as hostile,
            grpc.insecure_channel(addr, options=own) as van,
        ):
            calls = [stream_method(hostile)(_idle_requests(stop)) for _ in range(200)]
            per_peer = StreamLimits().per_peer
            deadline = time.monotonic() + 30
            while server.streams.opened < per_peer:  # the client holds all the server lets it hold
                assert time.monotonic() < deadline, f"only {server.streams.opened} streams arrived"
                time.sleep(0.05)
            assert len(server.streams) == per_peer  # the rest wait in the client's own queue
            ack = _ack_within(van, batch("van-1", 1, 10), deadline_s=5.0)
            assert ranges(ack) == [(1, 10)] and not ack.rejected
            for call in calls:
                call.cancel()
    finally:
        stop.set()
        server.stop(1).wait()
        store.close()


def test_a_stream_idle_too_long_is_ended_and_the_van_reconnects(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    ingest = Ingest(store)
    addr = f"127.0.0.1:{free_port()}"
    server = serve_grpc(ingest, addr, limits=StreamLimits(idle_s=1.0))
    try:
        with grpc.insecure_channel(addr) as channel:
            van = Van(channel)
            assert ranges(van.send(batch("van-1", 1, 10))) == [(1, 10)]
            with pytest.raises(grpc.RpcError) as ended:  # no batch for a second: the server ends it
                next(van.responses)
            assert ended.value.code() == grpc.StatusCode.CANCELLED
            assert server.streams.counts["idle"] == 1 and len(server.streams) == 0
            again = Van(channel)  # the van has data again: a new stream
            assert ranges(again.send(batch("van-1", 11, 10))) == [(11, 20)]
            again.close()
            van.close()
    finally:
        server.stop(1).wait()
        store.close()


def test_peer_address_ignores_the_port() -> None:
    assert peer_address("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert peer_address("ipv6:[::1]:40000") == "ipv6:[::1]"
    assert peer_address("unix:/tmp/s") == "unix:/tmp/s"
