"""A serial NMEA 0183 receiver (pyserial) and NMEA log files, both through ``NmeaDecoder``.

The driver only moves bytes: it assembles lines from whatever chunks the port delivers and feeds
them to the pure decoder. A USB receiver that is unplugged makes the port read fail or its path
vanish; that is a ``DeviceError`` and the ``Driver`` base loop reconnects when it comes back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import serial

from firmware_bridge import lines
from firmware_bridge.driver import Driver
from firmware_bridge.gps.nmea import NmeaDecoder
from firmware_bridge.gps.timebase import BUILD_FLOOR
from protocols.errors import DeviceError
from protocols.records import Fix
from protocols.rejects import Rejects

# Longer than any sentence (gpsd's limit is 102) but bounded, so a stream without newlines
# (a wrong baud rate gives exactly that) cannot grow the buffer forever.
MAX_LINE = 256


class LineAssembler(lines.LineAssembler):
    """The shared assembler with NMEA's line limit: CR LF, LF or lone CR end a sentence; a line
    over ``MAX_LINE`` is counted as ``overlong``, an unterminated one at :meth:`end` as
    ``truncated``, both in ``rejects`` (the decoder's or the driver's)."""

    def __init__(self, rejects: Rejects, max_line: int = MAX_LINE) -> None:
        super().__init__(max_line, rejects)


class SerialNmeaDriver(Driver[Fix]):
    """An NMEA receiver on a serial port (``/dev/ttyACM0``, ``/dev/serial/by-id/...``)."""

    kind = "gps"

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        name: str = "gps-nmea",
        floor: float = BUILD_FLOOR,
        **kwargs: float,
    ) -> None:
        """``floor``: the earliest date a fix may carry (see :mod:`timebase`); this build's date
        for a live receiver, the GPS epoch when a recorded capture is played into the port."""
        super().__init__(name, **kwargs)
        self.port = port
        self.baudrate = baudrate
        self.decoder = NmeaDecoder(self.rejects, floor=floor)
        self._lines = LineAssembler(self.rejects)
        self._serial: serial.Serial | None = None

    def _open(self) -> None:
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0.2, exclusive=True)
        except serial.SerialException as exc:
            raise DeviceError(str(exc)) from exc

    def _read(self, timeout: float) -> Sequence[Fix]:
        port = self._serial
        if port is None:
            raise DeviceError("not open")
        try:
            port.timeout = timeout
            # block for the first byte, then take whatever else is already buffered
            chunk = port.read(1)
            if chunk:
                chunk += port.read(port.in_waiting)
        except (serial.SerialException, OSError, TypeError) as exc:
            # pyserial reports a vanished USB device as "device reports readiness to read but
            # returned no data" (SerialException) or, on some kernels, a TypeError from a closed fd
            raise DeviceError(str(exc)) from exc
        if not chunk:
            if not Path(self.port).exists():
                raise DeviceError(f"{self.port} disappeared")
            return ()
        fixes: list[Fix] = []
        for line in self._lines.push(chunk):
            fixes.extend(self.decoder.feed(line))
        return fixes

    def _flush(self) -> Sequence[Fix]:
        # the device went away mid-epoch: what was complete is still a fix; a cut line is not
        self._lines.end()
        return self.decoder.flush()

    def _close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()


def iter_lines_from_file(path: Path) -> Iterator[bytes]:
    """The lines of an NMEA log. A last line without a line ending is still offered: the
    checksum and the field count tell a complete sentence from one cut off by the capture."""
    with path.open("rb") as f:
        yield from f


def iter_fixes_from_file(path: Path, decoder: NmeaDecoder | None = None) -> Iterator[Fix]:
    """Every fix in an NMEA log file (a capture of a receiver's output, or a gpsd test log)."""
    dec = decoder if decoder is not None else NmeaDecoder()
    for line in iter_lines_from_file(path):
        yield from dec.feed(line)
    yield from dec.flush()
