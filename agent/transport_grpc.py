"""The gRPC uplink transport: one bidirectional ``Uplink.Stream`` call, batches up, acks and
documents down (``Downlink`` messages), spoken over HTTP/2 with the pure-Python ``h2`` library.

Why not grpcio on the van: its C core costs about 20 MB resident (half the van's 40 MB budget)
for one long-lived call. gRPC on the wire is small: an HTTP/2 POST to ``/dropline.v1.Uplink/Stream``
with ``content-type: application/grpc``, each message prefixed by a compressed flag (always 0
here) and a 4-byte big-endian length, and the status in the trailers. The collector keeps grpcio's
server, so every test of this transport is an interoperability test against the reference
implementation.

One thread owns the socket (TLS objects must not be read and written from two threads at once):
it sends what :meth:`GrpcTransport.send` queued as far as HTTP/2 flow control allows, reads
frames, and answers the collector's pings (h2 does that). When nothing has been read for
``keepalive_s`` it pings, and a link silent for another ``keepalive_s`` is declared broken: a
black-holed link is noticed within about twice ``keepalive_s`` even when no batch is moving.
Pings are never closer than ``keepalive_s`` apart, which the collector's ping policy allows
(``cloud.grpc_server.CLIENT_MIN_PING_INTERVAL_MS``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from agent.uplink import drain
from protocols.downlink import Downlink, decode_downlink
from protocols.errors import ConfigError, TransportError, WireError
from protocols.grpc_method import STREAM_METHOD
from protocols.tls import TlsFiles

log = logging.getLogger("dropline.uplink.grpc")

_PREFIX = struct.Struct(">BI")
"""A gRPC message's prefix: compressed flag, length."""
_STREAM_ID = 1
"""The one stream of the connection (the first client-initiated stream)."""
_PING = b"dropline"


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ConfigError naming the target otherwise."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise ConfigError(f"uplink target {target!r}: expected host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """Mutual TLS as gRPC speaks it: TLS 1.2+, ALPN ``h2``, the collector's certificate checked
    against the fleet's CA and the target's host name, this van's certificate offered."""
    ca, _, _ = tls.read()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    try:
        context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"tls {tls.cert} / {tls.key} / {tls.ca}: {exc}") from None
    return context


class GrpcTransport:
    """With ``tls`` the connection is mutual TLS (this van's certificate, the collector's checked
    against the CA and the target's host name); without, plaintext (local tests only)."""

    def __init__(
        self,
        target: str,
        keepalive_s: float = 5.0,
        max_message_bytes: int = 16 << 20,
        tls: TlsFiles | None = None,
    ) -> None:
        self.target = target
        self._host, self._port = split_target(target)
        self._keepalive_s = keepalive_s
        self._max_message = max_message_bytes
        self._tls = tls_context(tls) if tls is not None else None
        self._outgoing: queue.Queue[bytes] = queue.Queue(maxsize=64)
        self._downlink: queue.Queue[Downlink] = queue.Queue()
        self._error: str | None = None
        self._done = threading.Event()
        self._closing = threading.Event()
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)

    def connect(self, timeout: float) -> None:
        try:
            raw = socket.create_connection((self._host, self._port), timeout=timeout)
        except OSError as exc:
            raise TransportError(f"gRPC collector {self.target} not reachable: {exc}") from None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = raw
            if self._tls is not None:
                sock = self._tls.wrap_socket(raw, server_hostname=self._host)
                if sock.selected_alpn_protocol() != "h2":
                    raise TransportError(f"gRPC collector {self.target} did not agree to HTTP/2 (ALPN)")
            # A backstop for one blocking send, or one TLS record trickling in over a slow link:
            # silence between frames is the keep-alive's to judge, in about 2 x keepalive_s.
            sock.settimeout(max(3 * self._keepalive_s, 10.0))
            conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            conn.initiate_connection()
            conn.send_headers(_STREAM_ID, self._headers())
            sock.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise TransportError(f"gRPC collector {self.target}: {exc}") from None
        except TransportError:
            raw.close()
            raise
        self._sock = sock
        threading.Thread(target=self._run, args=(sock, conn), name="grpc-link", daemon=True).start()

    def _headers(self) -> list[tuple[str, str]]:
        return [
            (":method", "POST"),
            (":scheme", "https" if self._tls is not None else "http"),
            (":path", STREAM_METHOD),
            (":authority", self.target),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "dropline-agent"),
        ]

    def _run(self, sock: socket.socket, conn: h2.connection.H2Connection) -> None:
        """The socket's one thread: until the stream ends, the link breaks or close() is called."""
        link = _Link(conn, self._max_message, self._downlink)
        try:
            self._loop(sock, link)
        except (OSError, ssl.SSLError) as exc:
            link.error = link.error or f"gRPC link broke: {exc}"
        except h2.exceptions.ProtocolError as exc:
            link.error = f"gRPC collector broke HTTP/2: {exc}"
        finally:
            self._error = link.error or "stream ended"
            self._done.set()
            for end in (sock, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    end.close()

    def _loop(self, sock: socket.socket, link: _Link) -> None:
        last_read = time.monotonic()
        ping_sent: float | None = None
        while link.error is None and not self._closing.is_set():
            link.take(self._outgoing)
            link.pump()
            data = link.conn.data_to_send()
            if data:
                sock.sendall(data)
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            wait = 0.0 if pending else self._keepalive_s / 2
            readable, _, _ = select.select([sock, self._wake_r], [], [], wait)
            now = time.monotonic()
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            if pending or sock in readable:
                chunk = sock.recv(65536)
                if not chunk:
                    link.error = link.error or "collector closed the connection"
                    break
                link.receive(chunk)
                last_read, ping_sent = now, None
            elif ping_sent is not None and now - ping_sent >= self._keepalive_s:
                link.error = f"gRPC collector silent for {now - last_read:.0f} s (keep-alive ping unanswered)"
            elif ping_sent is None and now - last_read >= self._keepalive_s:
                link.conn.ping(_PING)
                ping_sent = now
        if self._closing.is_set():
            with contextlib.suppress(h2.exceptions.ProtocolError, OSError):
                link.conn.reset_stream(_STREAM_ID)
                link.conn.close_connection()
                sock.sendall(link.conn.data_to_send())

    def _check(self) -> None:
        if self._done.is_set():
            raise TransportError(self._error or "stream ended")

    def send(self, batch: bytes) -> None:
        while True:
            self._check()
            try:
                self._outgoing.put(batch, timeout=0.5)
            except queue.Full:
                continue
            with contextlib.suppress(BlockingIOError):
                self._wake_w.send(b"\0")
            return

    def receive(self, timeout: float) -> list[Downlink]:
        return drain(self._downlink, timeout, self._check)

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._sock is None:
            self._done.set()
            self._wake_r.close()
            self._wake_w.close()
        self._done.wait(2.0)


def _header_map(headers: Iterable[tuple[str | bytes, str | bytes]] | None) -> dict[str, str]:
    """h2's header list as a dict of text; the last of a repeated name wins."""
    return {_text(name): _text(value) for name, value in headers or ()}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class _Link:
    """The HTTP/2 side of one connection, driven by the socket's thread: messages out under flow
    control, frames in, gRPC messages cut out of DATA frames and decoded."""

    def __init__(
        self, conn: h2.connection.H2Connection, max_message: int, downlink: queue.Queue[Downlink]
    ) -> None:
        self.conn = conn
        self.error: str | None = None
        self._max_message = max_message
        self._downlink = downlink
        self._out: deque[memoryview] = deque()
        self._in = bytearray()

    def take(self, outgoing: queue.Queue[bytes]) -> None:
        """Move queued batches onto this link, each with its gRPC prefix."""
        while True:
            try:
                batch = outgoing.get_nowait()
            except queue.Empty:
                return
            self._out.append(memoryview(_PREFIX.pack(0, len(batch)) + batch))

    def pump(self) -> None:
        """Send as much of the queued messages as the collector's flow-control windows allow."""
        while self._out:
            head = self._out[0]
            room = min(self.conn.local_flow_control_window(_STREAM_ID), self.conn.max_outbound_frame_size)
            if room <= 0:
                return
            self.conn.send_data(_STREAM_ID, head[:room].tobytes())
            if room >= len(head):
                self._out.popleft()
            else:
                self._out[0] = head[room:]

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self._in += event.data
                self._messages()
            elif isinstance(event, h2.events.ResponseReceived):
                self._response(_header_map(event.headers))
            elif isinstance(event, h2.events.TrailersReceived):
                self._trailers(_header_map(event.headers))
            elif isinstance(event, h2.events.StreamReset):
                self.error = self.error or f"collector reset the stream (HTTP/2 error {event.error_code})"
            elif isinstance(event, h2.events.StreamEnded):
                self.error = self.error or "collector closed the stream"
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.error = self.error or f"collector ended the connection (GOAWAY {event.error_code})"

    def _response(self, headers: dict[str, str]) -> None:
        if headers.get(":status") != "200" or not headers.get("content-type", "").startswith(
            "application/grpc"
        ):
            self.error = f"collector answered HTTP {headers.get(':status')} {headers.get('content-type')!r}"
        elif "grpc-status" in headers:  # trailers-only: the call failed before it began
            self._trailers(headers)

    def _trailers(self, headers: dict[str, str]) -> None:
        status, message = headers.get("grpc-status", "?"), headers.get("grpc-message", "")
        self.error = f"gRPC stream ended: status {status} {message}".rstrip()

    def _messages(self) -> None:
        while len(self._in) >= _PREFIX.size:
            compressed, length = _PREFIX.unpack_from(self._in)
            if compressed or length > self._max_message:
                self.error = (
                    f"collector sent a message we cannot read (compressed={compressed}, {length} bytes)"
                )
                return
            if len(self._in) < _PREFIX.size + length:
                return
            message = bytes(self._in[_PREFIX.size : _PREFIX.size + length])
            del self._in[: _PREFIX.size + length]
            try:
                self._downlink.put(decode_downlink(message))
            except WireError as exc:
                log.warning("gRPC: undecodable downlink message (%d bytes) skipped: %s", length, exc)
