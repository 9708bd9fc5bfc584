"""gRPC ingest: the ``dropline.v1.Uplink/Stream`` bidirectional stream, batches up, acks down.

The method is registered with no request deserializer, so each request reaches the servicer as
the raw bytes of a Batch and ``wire.decode_batch`` parses it with the ingest's limits: a hostile
batch is refused with an Ack instead of being parsed unchecked, or failing the whole stream as a
deserialisation error would. Vans may send with the generated stub (Batch messages) or, cheaper,
with ``wire.encode_batch`` bytes and an identity serializer (see ``stream_method``).

With mutual TLS (``serve_grpc(..., tls=...)``) a client must present a certificate from the
fleet's CA, and a stream is bound from its start to the vehicle id of that certificate (its CN;
``protocols/tls.py``): a batch naming any other vehicle is refused (``vehicle_mismatch``,
counted and logged), so van A can never write, or pre-empt with spoofed seqs, van B's records.
A certificate that is not a vehicle's ends the stream (``PERMISSION_DENIED``). In plaintext
(local tests) a stream is bound to the vehicle of its first accepted batch instead.

Each open stream holds a worker thread, so idle streams must not be able to lock vans out
(``StreamLimits``): a stream with no batch for ``idle_s`` is ended (the van reconnects when it
has data); one peer address holds at most ``per_peer`` streams, and a new one from it ends that
address's longest-idle stream; when the server is one stream short of ``max_streams``, a new
stream ends the longest-idle stream of all. A stream whose batch is being stored is never ended.
Connections themselves are bounded too: keep-alive pings more often than a van needs are
refused (``min_ping_interval_without_data_ms``, ping strikes), a connection with no stream is
closed after ``max_connection_idle_ms``, and every connection is recycled after
``max_connection_age_ms`` (plus a grace for the batch in flight).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from cloud.documents import POLL_S, PushedDocuments
from cloud.ingest import Ingest, Limits
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.grpc_method import SERVICE, STREAM_METHOD
from protocols.tls import TlsFiles, vehicle_of

log = logging.getLogger("dropline.collector.grpc")

CLIENT_MIN_PING_INTERVAL_MS = 4_000
"""A van may ping this often on an idle connection (set its ``grpc.keepalive_time_ms`` >= this)."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How many streams the server holds and how long an idle one may stay (see module doc)."""

    max_streams: int = 128
    per_peer: int = 16
    idle_s: float = 60.0
    max_connection_idle_ms: int = 300_000
    max_connection_age_ms: int = 1_800_000
    max_connection_age_grace_ms: int = 30_000


def server_options(limits: Limits, streams: StreamLimits = StreamLimits()) -> list[tuple[str, int]]:
    """Channel arguments: messages a little larger than the ingest limit still arrive, so an
    oversized batch is refused by the ingest with an Ack rather than by gRPC killing the stream;
    keepalive both ways, so a half-open connection (a van that vanished) is noticed; and the
    connection bounds above."""
    return [
        ("grpc.max_receive_message_length", limits.max_bytes + 1024 * 1024),
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),  # then GOAWAY: a client pinging too often is cut off
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_concurrent_streams", streams.per_peer),  # per connection; a van needs one
        ("grpc.max_connection_idle_ms", streams.max_connection_idle_ms),
        ("grpc.max_connection_age_ms", streams.max_connection_age_ms),
        ("grpc.max_connection_age_grace_ms", streams.max_connection_age_grace_ms),
        ("grpc.so_reuseport", 0),  # a second collector on the same port is an error, not a silent split
    ]


def peer_address(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``: streams are counted per address, not port."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class _Stream:
    __slots__ = ("address", "busy", "cancel", "ended", "last")

    def __init__(self, address: str, cancel: Callable[[], object], now: float) -> None:
        self.address = address
        self.cancel = cancel
        self.last = now
        self.busy = False
        self.ended = False


class StreamTable:
    """The open streams, their peer address and last activity; ends idle ones (a reaper thread)
    and makes room for newcomers. Thread-safe; ``counts`` tells tests and logs what it ended."""

    def __init__(self, limits: StreamLimits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.counts = {"idle": 0, "peer_full": 0, "server_full": 0}
        self.opened = 0
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._open: set[_Stream] = set()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="grpc-idle-reaper", daemon=True)
        self._reaper.start()

    def open(self, peer: str, cancel: Callable[[], object]) -> _Stream:
        stream = _Stream(peer_address(peer), cancel, self._monotonic())
        ending: list[tuple[_Stream, str]] = []
        with self._lock:
            same = [s for s in self._open if s.address == stream.address and not s.busy]
            if len(same) >= self.limits.per_peer:
                ending.append((min(same, key=lambda s: s.last), "peer_full"))
            for s, why in ending:
                self._end(s, why)
            if len(self._open) >= self.limits.max_streams - 1:  # keep a slot for the next newcomer
                idle = [s for s in self._open if not s.busy]
                if idle:
                    ending.append((min(idle, key=lambda s: s.last), "server_full"))
                    self._end(*ending[-1])
            self._open.add(stream)
            self.opened += 1
        for s, why in ending:
            log.info("gRPC: ending the idle stream of %s to make room (%s)", s.address, why)
            s.cancel()
        return stream

    def _end(self, stream: _Stream, why: str) -> None:
        """Under the lock: forget the stream and count why (cancel it outside the lock)."""
        stream.ended = True
        self._open.discard(stream)
        self.counts[why] += 1

    def busy(self, stream: _Stream, busy: bool) -> None:
        with self._lock:
            stream.busy = busy
            stream.last = self._monotonic()

    def close(self, stream: _Stream) -> None:
        with self._lock:
            self._open.discard(stream)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def _reap(self) -> None:
        period = min(1.0, self.limits.idle_s / 4)
        while not self._stop.wait(period):
            now = self._monotonic()
            with self._lock:
                idle = [s for s in self._open if not s.busy and now - s.last >= self.limits.idle_s]
                for s in idle:
                    self._end(s, "idle")
            for s in idle:
                log.info("gRPC: ending a stream of %s, idle for %.0f s", s.address, now - s.last)
                s.cancel()

    def stop(self) -> None:
        self._stop.set()
        self._reaper.join(5)


class UplinkServicer:
    """Hands every batch of a stream to the ingest and answers each with its Ack, in order; sends
    the bound vehicle's pushed documents (``cloud/documents.py``) on bind and on each new push."""

    def __init__(
        self,
        ingest: Ingest,
        streams: StreamTable,
        mutual_tls: bool = False,
        documents: PushedDocuments | None = None,
    ) -> None:
        self.ingest = ingest
        self.streams = streams
        self.mutual_tls = mutual_tls
        self.documents = documents

    def Stream(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[pb.Downlink]:
        bound: str | None = None
        peer = context.peer()
        if self.mutual_tls:
            certs = context.auth_context().get("x509_pem_cert") or [b""]
            bound = vehicle_of(certs[0])
            if bound is None:
                self.ingest.reject("not_a_vehicle_certificate", peer)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a vehicle certificate")
        stream = self.streams.open(peer, context.cancel)
        log.info("gRPC stream opened by %s", peer)
        out: queue.Queue[pb.Downlink | BaseException | None] = queue.Queue()
        vehicle = [bound]  # set by the reader when a plaintext stream binds

        def read() -> None:
            """Batches in, acks out (on the reader thread, so documents can go down meanwhile)."""
            try:
                for data in request_iterator:
                    self.streams.busy(stream, True)
                    try:
                        ack = self.ingest.handle(data, vehicle[0])
                    finally:
                        self.streams.busy(stream, False)
                    if vehicle[0] is None and not ack.rejected and ack.vehicle:
                        vehicle[0] = ack.vehicle
                        log.info("gRPC stream from %s is vehicle %s", peer, ack.vehicle)
                    out.put(pb.Downlink(ack=ack))
                    if stream.ended:
                        break
            except grpc.RpcError as exc:
                if not stream.ended:  # ended by us: the reason was logged then
                    out.put(exc)
            finally:
                out.put(None)

        reader = threading.Thread(target=read, name="grpc-stream-reader", daemon=True)
        reader.start()
        sent: dict[str, int] = {}  # kind -> id of the push sent on this stream
        seen = -1
        try:
            while True:
                if self.documents is not None and vehicle[0] is not None:
                    last = self.documents.last_id()
                    if last != seen:  # bound just now, or a new push somewhere
                        seen = last
                        yield from self._pending(vehicle[0], sent)
                try:
                    item = out.get(timeout=POLL_S if self.documents is not None else None)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.streams.close(stream)
            log.info("gRPC stream from %s (%s) closed", peer, vehicle[0] or "no vehicle")

    def _pending(self, vehicle: str, sent: dict[str, int]) -> Iterator[pb.Downlink]:
        assert self.documents is not None
        for push_id, kind, envelope_bytes in self.documents.newest(vehicle):
            if sent.get(kind, 0) < push_id:
                sent[kind] = push_id
                log.info("gRPC: document %s (push %d) down to %s", kind, push_id, vehicle)
                yield pb.Downlink(document=pb.Document(kind=kind, envelope=envelope_bytes))


def add_uplink(
    server: Any,
    ingest: Ingest,
    streams: StreamTable,
    mutual_tls: bool = False,
    documents: PushedDocuments | None = None,
) -> None:
    """Register the raw-bytes Uplink service on a gRPC server."""
    servicer = UplinkServicer(ingest, streams, mutual_tls, documents)
    handlers = {
        "Stream": grpc.stream_stream_rpc_method_handler(
            servicer.Stream, request_deserializer=None, response_serializer=pb.Downlink.SerializeToString
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class GrpcServer:
    """A started gRPC server and its stream table; ``stop(grace)`` returns an event to wait on."""

    def __init__(self, server: Any, streams: StreamTable) -> None:
        self.server = server
        self.streams = streams

    def stop(self, grace: float | None) -> threading.Event:
        self.streams.stop()
        event: threading.Event = self.server.stop(grace)
        return event


def serve_grpc(
    ingest: Ingest,
    addr: str,
    *,
    limits: StreamLimits = StreamLimits(),
    tls: TlsFiles | None = None,
    documents: PushedDocuments | None = None,
) -> GrpcServer:
    """A started server listening on ``addr`` (``host:port``): mutual TLS with ``tls`` (a client
    certificate from ``tls.ca`` required), else plaintext (local tests). Each open stream holds
    one worker thread, so ``limits.max_streams`` vans can be connected at once; beyond that gRPC
    refuses with RESOURCE_EXHAUSTED and the van retries, but idle streams make room (see module
    doc). ``documents``: what ``dropline config push --db`` left for the vans, sent down their
    streams. Stop it with ``server.stop(grace).wait()``."""
    streams = StreamTable(limits)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.max_streams, thread_name_prefix="grpc-ingest"),
        options=server_options(ingest.limits, limits),
        maximum_concurrent_rpcs=limits.max_streams,
    )
    add_uplink(server, ingest, streams, mutual_tls=tls is not None, documents=documents)
    try:
        if tls is not None:
            ca, cert, key = tls.read()
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
            port = server.add_secure_port(addr, creds)
        else:
            port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        streams.stop()
        raise OSError(f"gRPC: cannot listen on {addr}: {exc}") from exc
    if port == 0:
        streams.stop()
        raise OSError(f"gRPC: cannot listen on {addr}")
    server.start()
    log.info("collector: gRPC Uplink listening on %s (%s)", addr, "mutual TLS" if tls else "plaintext")
    return GrpcServer(server, streams)


def stream_method(channel: Any) -> Any:
    """The Uplink.Stream callable for a van that sends ``wire.encode_batch`` bytes as they are:
    ``downlinks = stream_method(channel)(iter_of_batch_bytes)`` yields ``pb.Downlink`` messages."""
    return channel.stream_stream(
        STREAM_METHOD, request_serializer=None, response_deserializer=pb.Downlink.FromString
    )
