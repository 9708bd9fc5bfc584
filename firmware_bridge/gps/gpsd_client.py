"""gpsd's JSON stream (``?WATCH``) to ``Fix``: a streaming client of our own on a plain socket.

Why not gpsd-py3 (docs/dependencies-gpsd.md): it polls (``?POLL``), so fixes between two polls
are lost and a slow poller sees the same one twice, and it reports a mode-3 fix at 0,0 when a TPV
has no lat/lon. Here every TPV gpsd sends is read, and only those with a position become a ``Fix``
(``fix_from_tpv`` never invents one).

The pure part (bytes -> lines -> ``Fix`` or a counted rejection) is ``GpsdStream``; the driver
only moves bytes and decides when the connection is dead: EOF, a socket error, or silence that
outlasts a ``?VERSION`` probe (gpsd hung or the host gone without a FIN).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from firmware_bridge.driver import Driver
from firmware_bridge.gps.tpv import fix_from_tpv
from firmware_bridge.lines import LineAssembler
from protocols.errors import DeviceError
from protocols.records import Fix
from protocols.rejects import Rejects

# gpsd's longest reports are SKY with many satellites (about 4 kB in gpsd's own test logs); far
# more than that is not gpsd talking, and the bound keeps a stream without newlines from growing.
MAX_LINE = 65536

WATCH = b'?WATCH={"enable":true,"json":true}\n'
PROBE = b"?VERSION;\n"
STATUS_SIM = 8  # gpsd's TPV "status": simulated fix


def watch_command(device: str | None = None) -> bytes:
    """The ``?WATCH`` that asks gpsd for JSON reports, from one device only when one is named."""
    if device is None:
        return WATCH
    return b"?WATCH=" + json.dumps({"enable": True, "json": True, "device": device}).encode() + b"\n"


class GpsdStream:
    """gpsd's newline-delimited JSON, in chunks of any size, to fixes; pure and deterministic.

    Lines are split by the shared :class:`LineAssembler`: gpsd ends each with CR LF (a lone CR or
    LF ends one too). Rejections (counted in ``rejects``): ``bad_utf8``, ``bad_json``,
    ``not_object``, ``overlong`` (a line over ``max_line`` bytes, dropped up to its end, never
    held), ``truncated`` (an unterminated line when the stream ends), ``bad_tpv`` (a TPV that
    claims a position gpsd could not have sent: latitude 95, an unreadable time) and
    ``gpsd_error`` (gpsd's ERROR reports).
    TPVs without a position (mode 0/1, or no lat/lon/time yet) are normal while a receiver
    acquires: they are counted in ``no_position``, not rejected; so are simulated fixes
    (``status`` 8, a receiver in demo mode).
    """

    def __init__(self, rejects: Rejects | None = None, *, max_line: int = MAX_LINE) -> None:
        self.rejects = rejects if rejects is not None else Rejects("gpsd")
        self.max_line = max_line
        self.classes: Counter[str] = Counter()
        self.no_position = 0
        self.last_error: str | None = None
        self._lines = LineAssembler(max_line, self.rejects)

    def reset(self) -> None:
        """Forget a partial line: a new connection never continues the old one's last line."""
        self._lines.reset()

    def push(self, chunk: bytes) -> list[Fix]:
        """The fixes of every line completed by ``chunk``; a partial last line waits for more."""
        fixes: list[Fix] = []
        for raw in self._lines.push(chunk):
            fix = self.line(raw)
            if fix is not None:
                fixes.append(fix)
        return fixes

    def end(self) -> None:
        """The stream stopped: an unterminated line is incomplete, never parsed."""
        self._lines.end()

    def line(self, raw: bytes | str) -> Fix | None:
        """One report (without its newline) to a Fix, or None: counted when it is bad input."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            self.rejects.reject("bad_utf8", raw)
            return None
        text = text.strip()
        if not text:
            return None
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            self.rejects.reject("bad_json", text)
            return None
        if not isinstance(obj, dict):
            self.rejects.reject("not_object", text)
            return None
        cls = obj.get("class")
        if not isinstance(cls, str):
            self.rejects.reject("no_class", text)
            return None
        self.classes[cls] += 1
        if cls == "TPV":
            return self._tpv(obj, text)
        if cls == "ERROR":
            self.last_error = str(obj.get("message", text))
            self.rejects.reject("gpsd_error", self.last_error)
        return None

    def _tpv(self, obj: dict[str, Any], text: str) -> Fix | None:
        if obj.get("status") == STATUS_SIM:
            # a receiver in demo mode (the Garmin Geko log) reports made-up positions
            self.no_position += 1
            return None
        try:
            fix = fix_from_tpv(obj)
        except (ValueError, OverflowError, OSError):
            fix = None  # a time datetime cannot represent: same as any other impossible value
        if fix is not None:
            return fix
        if obj.get("mode") in (2, 3) and "lat" in obj and "lon" in obj and "time" in obj:
            # it claims a position, but one fix_from_tpv refuses (out of range, not a number,
            # unreadable time): bad input, not acquisition
            self.rejects.reject("bad_tpv", text)
        else:
            self.no_position += 1
        return None


_NOT_JSON = (b"$", b"!", b"#")


def _merge_epoch(earlier: Fix, later: Fix) -> Fix:
    """gpsd reports an epoch several times as sentences arrive; the last report wins, and a field
    it lacks is taken from an earlier report of the same epoch (same receiver time)."""
    fill = {
        name: getattr(earlier, name)
        for name in ("alt_msl", "speed", "track", "hdop", "sats")
        if getattr(later, name) is None and getattr(earlier, name) is not None
    }
    return replace(later, **fill) if fill else later


def iter_fixes_from_gpsd_json(
    lines: Iterable[bytes | str], rejects: Rejects | None = None, *, per_epoch: bool = False
) -> Iterator[Fix]:
    """Fixes from gpsd JSON lines (a ``gpspipe -w`` capture, a ``.chk`` file), in order.

    NMEA and AIVDM sentences (``$``, ``!``: ``gpspipe -w -r`` interleaves them) and ``#`` comments
    are skipped, not rejected. With ``per_epoch`` consecutive TPVs with the same time become one
    fix (as ``dropline decode gps`` prints them); otherwise every TPV with a position is one fix,
    as the driver delivers them.
    """
    stream = GpsdStream(rejects)
    pending: Fix | None = None
    for raw in lines:
        line = raw.strip() if isinstance(raw, bytes) else raw.strip().encode("utf-8", "surrogateescape")
        if line[:1] in _NOT_JSON:
            continue
        fix = stream.line(line)
        if fix is None:
            continue
        if not per_epoch:
            yield fix
        elif pending is not None and pending.time == fix.time:
            pending = _merge_epoch(pending, fix)
        else:
            if pending is not None:
                yield pending
            pending = fix
    if pending is not None:
        yield pending


class GpsdDriver(Driver[Fix]):
    """gpsd on ``host:port``: every TPV with a position, as a Fix, reconnecting when gpsd restarts.

    ``silence_s``: with no byte from gpsd for this long the driver sends ``?VERSION;``, which gpsd
    always answers; no answer within another ``silence_s`` means gpsd is gone (hung, or the
    connection half-open), and the driver reconnects. A quiet receiver alone never causes that,
    but gpsd does stall for about a second while it activates a device: keep ``silence_s`` above.
    With ``device``, gpsd refuses the WATCH (ERROR "No such device") until that device exists:
    the driver then retries with backoff, so a receiver plugged in later is picked up.
    """

    kind = "gps"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2947,
        *,
        device: str | None = None,
        name: str = "gpsd",
        silence_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        max_line: int = MAX_LINE,
        **kwargs: float,
    ) -> None:
        super().__init__(name, **kwargs)
        self.host = host
        self.port = port
        self.device = device
        self.silence_s = silence_s
        self.connect_timeout_s = connect_timeout_s
        self.stream = GpsdStream(self.rejects, max_line=max_line)
        self.watching = threading.Event()
        """Set once gpsd has acknowledged our ``?WATCH`` on the current connection."""
        self._sock: socket.socket | None = None
        self._last_rx = 0.0
        self._probe_at: float | None = None
        self._watches_seen = 0
        self._errors_seen = 0

    def _open(self) -> None:
        self.stream.reset()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise DeviceError(f"gpsd at {self.host}:{self.port}: {exc}") from exc
        try:
            sock.sendall(watch_command(self.device))
        except OSError as exc:
            sock.close()
            raise DeviceError(f"gpsd at {self.host}:{self.port}: {exc}") from exc
        self._sock = sock
        self._watches_seen = self.stream.classes["WATCH"]
        self._errors_seen = self.stream.classes["ERROR"]
        self._last_rx = time.monotonic()
        self._probe_at = None

    def _read(self, timeout: float) -> Sequence[Fix]:
        sock = self._sock
        if sock is None:
            raise DeviceError("not connected")
        try:
            sock.settimeout(timeout)
            data = sock.recv(65536)
        except TimeoutError:
            self._check_silence()
            return ()
        except OSError as exc:
            raise DeviceError(f"gpsd connection broke: {exc}") from exc
        if not data:
            raise DeviceError("gpsd closed the connection")
        self._last_rx = time.monotonic()
        self._probe_at = None
        fixes = self.stream.push(data)
        if not self.watching.is_set():
            if self.stream.classes["WATCH"] > self._watches_seen:
                self.watching.set()
            elif self.stream.classes["ERROR"] > self._errors_seen:
                raise DeviceError(f"gpsd refused the WATCH: {self.stream.last_error}")
        return fixes

    def _check_silence(self) -> None:
        now = time.monotonic()
        if self._probe_at is not None:
            if now - self._probe_at > self.silence_s:
                raise DeviceError(f"gpsd silent for {now - self._last_rx:.1f} s and no answer to a probe")
        elif now - self._last_rx > self.silence_s:
            assert self._sock is not None
            try:
                self._sock.sendall(PROBE)
            except OSError as exc:
                raise DeviceError(f"gpsd connection broke: {exc}") from exc
            self._probe_at = now

    def _flush(self) -> Sequence[Fix]:
        # a line cut by the disconnect is incomplete: counted, never parsed
        self.stream.end()
        return ()

    def _close(self) -> None:
        self.watching.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
