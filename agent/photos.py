"""Proof-of-delivery photos and signatures from the driver's handheld into the outbox.

Two ways in, both off the event thread (the outbox is thread-safe): a watched folder
(``[photos] inbox``: the handheld writes ``STOP__PARCEL.jpg`` and renames it in when complete)
and a loopback HTTP endpoint (``[photos] listen``: ``POST /photos?delivery=STOP/PARCEL`` with the
image's ``Content-Type``). Each file becomes ``BlobChunk`` records of ``chunk_bytes``, committed
(fsync'd, never evicted) and uploaded after live records (the outbox's bulk class).

What a caller may assume: a file is answered (HTTP 201) or moved to ``taken/`` only after all its
chunks are committed. A crash in between re-takes the file once more; its blob id depends only on
the delivery, media type and bytes, so the collector keeps one blob (it dedupes by blob + index).
A file that cannot be taken (too large, unknown type, no delivery) is counted, logged and moved
to ``rejected/``; the HTTP endpoint answers it with a 4xx naming why.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from agent.config import PhotosConfig
from agent.outbox import Outbox
from protocols.errors import ConfigError
from protocols.records import BlobChunk
from protocols.rejects import Rejects

log = logging.getLogger("dropline.photos")

MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".svg": "image/svg+xml",
}
"""The file types the inbox folder takes, by extension (a signature is often PNG or SVG)."""

DELIVERY_SEPARATOR = "__"
"""In an inbox file name, between stop and parcel: ``S12__00340123450000000018.jpg``."""


def blob_id(delivery: str, media_type: str, data: bytes) -> str:
    """The same file for the same delivery always gets the same id (so a re-take is a duplicate)."""
    h = hashlib.sha256()
    for part in (delivery.encode(), b"\0", media_type.encode(), b"\0", data):
        h.update(part)
    return h.hexdigest()[:32]


def chunk_blob(
    data: bytes, *, time: float, delivery: str, media_type: str, chunk_bytes: int
) -> list[BlobChunk]:
    """``data`` as ``ceil(len / chunk_bytes)`` chunks (one empty chunk for an empty file), each
    carrying the whole blob's sha256 so the collector can verify what it joins."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be at least 1")
    digest = hashlib.sha256(data).hexdigest()
    blob = blob_id(delivery, media_type, data)
    count = max(1, -(-len(data) // chunk_bytes))
    return [
        BlobChunk(
            time, blob, i, count, digest, media_type, delivery, data[i * chunk_bytes : (i + 1) * chunk_bytes]
        )
        for i in range(count)
    ]


def delivery_from_name(name: str) -> tuple[str, str]:
    """``STOP__PARCEL.ext`` -> (``STOP/PARCEL``, media type); ValueError naming what is wrong."""
    stem, dot, ext = name.rpartition(".")
    media_type = MEDIA_TYPES.get(f"{dot}{ext}".lower())
    if not stem or media_type is None:
        raise ValueError(f"{name}: not one of {', '.join(sorted(MEDIA_TYPES))}")
    stop, sep, parcel = stem.partition(DELIVERY_SEPARATOR)
    if not sep or not stop or not parcel:
        raise ValueError(f"{name}: expected STOP{DELIVERY_SEPARATOR}PARCEL{dot}{ext}")
    return f"{stop}/{parcel}", media_type


class PhotoIntake:
    """The inbox watcher and the upload endpoint, each in its own daemon thread."""

    def __init__(self, config: PhotosConfig, outbox: Outbox, wall_clock: Callable[[], float]) -> None:
        """Raises ConfigError for a listen address that is not loopback or cannot be bound."""
        self.config = config
        self.outbox = outbox
        self._clock = wall_clock
        self.rejects = Rejects("photos", log)
        self.taken = 0
        """Files (folder or HTTP) whose chunks are committed."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        if config.inbox != Path(""):
            try:
                for sub in ("taken", "rejected"):
                    (config.inbox / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"photos.inbox {config.inbox}: cannot create {sub}/ ({exc.strerror})"
                ) from exc
        if config.listen:
            host, _, port = config.listen.rpartition(":")
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    raise ConfigError(f"photos.listen {config.listen}: only a loopback address is allowed")
                self._server = ThreadingHTTPServer((host, int(port)), _handler(self))
            except (ValueError, OSError) as exc:
                raise ConfigError(f"photos.listen {config.listen}: {exc}") from exc
            self._server.daemon_threads = True

    @property
    def port(self) -> int:
        """The bound port (useful with ``listen = 127.0.0.1:0``); 0 without an endpoint."""
        return self._server.server_address[1] if self._server else 0

    def start(self) -> None:
        if self.config.inbox != Path(""):
            self._threads.append(threading.Thread(target=self._watch, name="photos-inbox", daemon=True))
        if self._server:
            self._threads.append(
                threading.Thread(target=self._server.serve_forever, name="photos-http", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop taking files; a file being taken is finished first (its chunks committed)."""
        self._stop.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(30)

    def take(self, data: bytes, delivery: str, media_type: str, time: float) -> list[BlobChunk]:
        """Append the chunks of one file and return once they are committed (or the stop)."""
        chunks = chunk_blob(
            data, time=time, delivery=delivery, media_type=media_type, chunk_bytes=self.config.chunk_bytes
        )
        for c in chunks:
            self.outbox.append(c)  # priority: committed before append returns, unless stalled
        while self.outbox.stats.stalled and not self._stop.wait(0.2):
            pass  # the outbox retries on its own tick; the file is answered only once committed
        self.taken += 1
        log.info("photo %s for %s: %d bytes in %d chunks", chunks[0].blob, delivery, len(data), len(chunks))
        return chunks

    # -- the watched folder --------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_inbox()
            except OSError as exc:  # the folder vanished or is unreadable: say so, keep watching
                log.error("photos inbox %s: %s", self.config.inbox, exc)
            self._stop.wait(self.config.poll_s)

    def scan_inbox(self) -> int:
        """Take every complete file in the inbox once; returns how many were taken."""
        n = 0
        for entry in sorted(os.scandir(self.config.inbox), key=lambda e: e.name):
            if self._stop.is_set():
                break
            if entry.name.startswith(".") or entry.name.endswith((".tmp", ".part")) or not entry.is_file():
                continue
            n += self._take_file(Path(entry.path))
        return n

    def _take_file(self, path: Path) -> int:
        try:
            delivery, media_type = delivery_from_name(path.name)
            size = path.stat().st_size
            if size > self.config.max_bytes:
                raise ValueError(
                    f"{path.name}: {size} bytes, more than photos.max_bytes {self.config.max_bytes}"
                )
        except ValueError as exc:
            self.rejects.reject("bad_file", exc)
            os.replace(path, self.config.inbox / "rejected" / path.name)
            return 0
        data = path.read_bytes()
        self.take(data, delivery, media_type, path.stat().st_mtime)
        if self._stop.is_set() and self.outbox.stats.stalled:
            return 0  # not committed yet: the next start takes it again
        os.replace(path, self.config.inbox / "taken" / path.name)
        return 1


def _handler(intake: PhotoIntake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """``POST /photos?delivery=STOP/PARCEL``, body = the image, ``Content-Type`` its type."""

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/photos":
                self._answer(404, {"error": f"no such endpoint {url.path}; POST /photos"})
                return
            delivery = (parse_qs(url.query).get("delivery") or [""])[0]
            media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            length = self.headers.get("Content-Length")
            error = _refusal(delivery, media_type, length, intake.config.max_bytes)
            if error:
                intake.rejects.reject(error[1], error[2])
                self.close_connection = True  # the body (maybe huge) is never read
                self._answer(error[0], {"error": error[2]})
                return
            data = self.rfile.read(int(length or 0))
            if len(data) != int(length or 0):
                intake.rejects.reject("short_body", f"{len(data)} of {length} bytes")
                self._answer(400, {"error": f"body ended after {len(data)} of {length} bytes"})
                return
            chunks = intake.take(data, delivery, media_type, intake._clock())
            body = {
                "blob": chunks[0].blob,
                "sha256": chunks[0].sha256,
                "chunks": len(chunks),
                "bytes": len(data),
            }
            self._answer(201, body)

        def _answer(self, status: int, body: dict[str, object]) -> None:
            raw = json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("photos http: " + format, *args)

    return Handler


def _refusal(
    delivery: str, media_type: str, length: str | None, max_bytes: int
) -> tuple[int, str, str] | None:
    """(HTTP status, reject reason, message) for an upload refused before its body is read."""
    stop, sep, parcel = delivery.partition("/")
    if not (stop and sep and parcel):
        return 400, "no_delivery", f"delivery={delivery!r}: expected ?delivery=STOP/PARCEL"
    if media_type not in MEDIA_TYPES.values():
        return (
            415,
            "bad_media_type",
            f"Content-Type {media_type!r}: not one of {', '.join(sorted(set(MEDIA_TYPES.values())))}",
        )
    if length is None or not length.isdigit():
        return 411, "no_length", "Content-Length is required"
    if int(length) > max_bytes:
        return 413, "too_large", f"{length} bytes is more than photos.max_bytes = {max_bytes}"
    return None
