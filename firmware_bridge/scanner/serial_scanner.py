"""A barcode scanner on a serial line (USB CDC-ACM or RS-232): lines in, :class:`Scan` out.

The bytes are assembled into lines by :class:`LineAssembler` and parsed by :func:`parse_scan`,
both pure; this module only owns the port. A scan's ``time`` is its arrival time read from the
injected clock (the shell's; ``time.time`` by default), the only clock a scanner has. Unreadable
lines are counted in ``self.rejects`` (``overlong``, ``nul``, ``invalid_utf8``, ``control``,
``truncated`` for a line cut off by a disconnect); nothing a scanner sends can stop the driver.
A scan that breaks a GS1 rule (a wrong check digit, an impossible date) is counted there too,
under its :func:`invalid_reason`, and still delivered: a ``Scan`` of kind ``unknown`` keeping the
raw read and its ``error``, ``error_detail`` (and ``error_ai``) fields, so the driver's counters
show misreads while the core still records what was scanned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import serial

from firmware_bridge.driver import Driver
from firmware_bridge.scanner.lines import MAX_LINE, LineAssembler, Overlong, UnreadableLine, decode_line
from firmware_bridge.scanner.parse import invalid_reason, parse_scan
from protocols.errors import DeviceError
from protocols.records import Scan
from protocols.rejects import Rejects

log = logging.getLogger("dropline.scanner")


def scans_from_lines(lines: Iterable[bytes | Overlong], arrival: float, rejects: Rejects) -> list[Scan]:
    """Parse assembled lines that arrived at ``arrival``; count the unreadable ones, skip empty ones."""
    scans: list[Scan] = []
    for line in lines:
        if isinstance(line, Overlong):
            rejects.reject("overlong", f"{line.length} bytes without a line end")
            continue
        if not line:
            continue
        try:
            scans.append(parse_scan(decode_line(line), arrival))
        except UnreadableLine as exc:
            rejects.reject(exc.reason, exc.line)
        except Exception as exc:  # parse_scan never raises by design; a bug there must not stop the van
            log.exception("scanner: parser failed on %r", line[:80])
            rejects.reject("parser_error", exc)
    return scans


class SerialScannerDriver(Driver[Scan]):
    """A scanner sending one read per line (CR, LF or CRLF), optionally with AIM identifiers."""

    kind = "scanner"

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        name: str = "scanner",
        clock: Callable[[], float] = time.time,
        max_line: int = MAX_LINE,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        super().__init__(name, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
        self.port = port
        self.baudrate = baudrate
        self._clock = clock
        self._lines = LineAssembler(max_line, self.rejects)
        self._serial: serial.Serial | None = None

    @property
    def pending(self) -> int:
        """Bytes of a line received but not yet terminated."""
        return self._lines.pending

    def _open(self) -> None:
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0.2, exclusive=True)
        except (serial.SerialException, ValueError) as exc:
            raise DeviceError(f"{self.port}: {exc}") from exc
        self._lines.reset()

    def _read(self, timeout: float) -> Sequence[Scan]:
        port = self._serial
        if port is None:
            raise DeviceError(f"{self.port}: not open")
        if port.timeout != timeout:
            port.timeout = timeout
        data = port.read(max(1, port.in_waiting))  # SerialException is an OSError: the base reconnects
        if not data:
            return ()
        scans = scans_from_lines(self._lines.push(data), self._clock(), self.rejects)
        for scan in scans:
            reason = invalid_reason(scan)
            if reason is not None:
                self.rejects.reject(reason, f"{scan.fields.get('error_detail', '')}: {scan.raw[:80]!r}")
        return scans

    def _close(self) -> None:
        self._lines.end()  # a line cut off by the disconnect is counted as ``truncated``
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (OSError, serial.SerialException) as exc:
                log.debug("%s: close failed: %s", self.port, exc)


_CHUNK = 1 << 16


def decode_file(path: Path, rejects: Rejects, max_line: int = MAX_LINE) -> Iterator[tuple[int, Scan]]:
    """``(line number, scan)`` for every readable line of the file, streamed in chunks."""
    assembler = LineAssembler(max_line)
    number = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            for item in assembler.feed(chunk):
                number += 1
                scan = _scan(item, number, rejects)
                if scan is not None:
                    yield number, scan
    rest = assembler.finish()
    if rest is not None:
        number += 1
        scan = _scan(rest, number, rejects)
        if scan is not None:
            yield number, scan


def _scan(item: bytes | Overlong, number: int, rejects: Rejects) -> Scan | None:
    if isinstance(item, Overlong):
        rejects.reject("overlong", f"line {number}: {item.length}+ bytes")
        return None
    if not item:
        return None
    try:
        return parse_scan(decode_line(item), float(number))
    except UnreadableLine as exc:
        rejects.reject(exc.reason, f"line {number}: {exc.line[:80]!r}")
        return None
