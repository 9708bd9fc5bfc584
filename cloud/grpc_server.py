"""gRPC ingest: the ``dropline.v1.Uplink/Stream`` bidirectional stream, batches up, acks down.

The method is registered with no request deserializer, so each request reaches the servicer as
the raw bytes of a Batch and ``wire.decode_batch`` parses it with the ingest's limits: a hostile
batch is refused with an Ack instead of being parsed unchecked, or failing the whole stream as a
deserialisation error would. Vans may send with the generated stub (Batch messages) or, cheaper,
with ``wire.encode_batch`` bytes and an identity serializer (see ``stream_method``).

A stream is bound to the vehicle of its first accepted batch; a later batch naming another
vehicle is refused (``vehicle_mismatch``), as an MQTT topic binds a van to its own topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from cloud.ingest import Ingest, Limits
from protocols.dropline.v1 import dropline_pb2 as pb

log = logging.getLogger("dropline.collector.grpc")

SERVICE = "dropline.v1.Uplink"
METHOD = f"/{SERVICE}/Stream"
"""Full method name, for clients that call it with their own (identity) serializer."""

CLIENT_MIN_PING_INTERVAL_MS = 4_000
"""A van may ping this often on an idle connection (set its ``grpc.keepalive_time_ms`` >= this)."""


def server_options(limits: Limits) -> list[tuple[str, int]]:
    """Channel arguments: messages a little larger than the ingest limit still arrive, so an
    oversized batch is refused by the ingest with an Ack rather than by gRPC killing the stream;
    keepalive both ways, so a half-open connection (a van that vanished) is noticed."""
    return [
        ("grpc.max_receive_message_length", limits.max_bytes + 1024 * 1024),
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),  # a second collector on the same port is an error, not a silent split
    ]


class UplinkServicer:
    """Hands every batch of a stream to the ingest and answers each with its Ack, in order."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def Stream(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[pb.Downlink]:
        bound: str | None = None
        peer = context.peer()
        log.info("gRPC stream opened by %s", peer)
        try:
            for data in request_iterator:
                ack = self.ingest.handle(data, bound)
                if bound is None and not ack.rejected and ack.vehicle:
                    bound = ack.vehicle
                    log.info("gRPC stream from %s is vehicle %s", peer, bound)
                yield pb.Downlink(ack=ack)
        finally:
            log.info("gRPC stream from %s (%s) closed", peer, bound or "no vehicle")


def add_uplink(server: Any, ingest: Ingest) -> None:
    """Register the raw-bytes Uplink service on a gRPC server."""
    servicer = UplinkServicer(ingest)
    handlers = {
        "Stream": grpc.stream_stream_rpc_method_handler(
            servicer.Stream, request_deserializer=None, response_serializer=pb.Downlink.SerializeToString
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def serve_grpc(ingest: Ingest, addr: str, *, max_streams: int = 128) -> Any:
    """A started ``grpc.Server`` listening (plaintext) on ``addr`` (``host:port``). Each open
    stream holds one worker thread, so ``max_streams`` vans can be connected at once; more are
    refused with RESOURCE_EXHAUSTED and retry. Stop it with ``server.stop(grace).wait()``."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="grpc-ingest"),
        options=server_options(ingest.limits),
        maximum_concurrent_rpcs=max_streams,
    )
    add_uplink(server, ingest)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise OSError(f"gRPC: cannot listen on {addr}: {exc}") from exc
    if port == 0:
        raise OSError(f"gRPC: cannot listen on {addr}")
    server.start()
    log.info("collector: gRPC Uplink listening on %s", addr)
    return server


def stream_method(channel: Any) -> Any:
    """The Uplink.Stream callable for a van that sends ``wire.encode_batch`` bytes as they are:
    ``downlinks = stream_method(channel)(iter_of_batch_bytes)`` yields ``pb.Downlink`` messages."""
    return channel.stream_stream(
        METHOD, request_serializer=None, response_deserializer=pb.Downlink.FromString
    )
