"""The gRPC uplink transport: one bidirectional ``Uplink.Stream`` call, batches up, acks and
documents down (``Downlink`` messages).

Batches are already encoded by the outbox and ``protocols.wire``, so they go out as raw bytes
(identity serializer). HTTP/2 keep-alive pings notice a black-holed link within about twice
``keepalive_s`` even when no batch is moving.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import grpc

from agent.uplink import drain
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import TransportError
from protocols.grpc_method import STREAM_METHOD
from protocols.tls import TlsFiles

_CLOSE = b""


class GrpcTransport:
    """With ``tls`` the channel is mutual TLS (this van's certificate, the collector's checked
    against the CA and the target's host name); without, plaintext (local tests only)."""

    def __init__(
        self,
        target: str,
        keepalive_s: float = 5.0,
        max_message_bytes: int = 16 << 20,
        tls: TlsFiles | None = None,
    ) -> None:
        self.target = target
        self._credentials = None
        if tls is not None:
            ca, cert, key = tls.read()
            self._credentials = grpc.ssl_channel_credentials(ca, key, cert)
        self._options = [
            ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._channel: grpc.Channel | None = None
        self._outgoing: queue.Queue[bytes] = queue.Queue(maxsize=64)
        self._downlink: queue.Queue[pb.Downlink] = queue.Queue()
        self._error: str | None = None
        self._done = threading.Event()
        self._call: grpc.Future | None = None

    def connect(self, timeout: float) -> None:
        if self._credentials is not None:
            self._channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=self._options)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise TransportError(f"gRPC collector {self.target} not reachable in {timeout:.0f} s") from exc
        stream = self._channel.stream_stream(
            STREAM_METHOD, request_serializer=lambda b: b, response_deserializer=pb.Downlink.FromString
        )
        responses = stream(self._requests())
        self._call = responses
        threading.Thread(target=self._read, args=(responses,), name="grpc-downlink", daemon=True).start()

    def _requests(self) -> Iterator[bytes]:
        while True:
            item = self._outgoing.get()
            if item is _CLOSE:
                return
            yield item

    def _read(self, responses: Iterator[pb.Downlink]) -> None:
        try:
            for message in responses:
                self._downlink.put(message)
            self._error = "collector closed the stream"
        except grpc.RpcError as exc:
            self._error = f"gRPC stream broke: {exc.code()} {exc.details()}"
        finally:
            self._done.set()

    def _check(self) -> None:
        if self._done.is_set():
            raise TransportError(self._error or "stream ended")

    def send(self, batch: bytes) -> None:
        while True:
            self._check()
            try:
                self._outgoing.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def receive(self, timeout: float) -> list[pb.Downlink]:
        return drain(self._downlink, timeout, self._check)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._outgoing.put_nowait(_CLOSE)
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            self._channel.close()
