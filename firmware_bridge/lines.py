"""Bytes in chunks of any size to lines: the one line assembler of every driver and file reader.

A serial NMEA receiver, gpsd's JSON stream and a barcode scanner all deliver lines in whatever
pieces a read returns. Here only CR and LF end a line (never ``str.splitlines``, which also splits
at GS, the FNC1 separator in GS1 data), and a CR LF counts once even when a read ends between the
two. The length limit is checked before a byte is kept: a line that passes ``max_line`` is reported
once, as soon as it crosses the limit, and dropped up to its terminator, so a device streaming
junk without line ends (a wrong baud rate) costs at most ``max_line`` bytes and one linear scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from protocols.rejects import Rejects

_TERMINATOR = re.compile(rb"[\r\n]")
_CR, _LF = 0x0D, 0x0A
_HEAD = 32  # bytes of a dropped line kept for the log


@dataclass(frozen=True, slots=True)
class Overlong:
    """A line dropped because it passed the limit before its terminator arrived: ``length`` bytes
    had come at that moment; ``head`` is its start, for the log (not compared)."""

    length: int
    head: bytes = field(default=b"", compare=False)


class LineAssembler:
    """Bytes in (any chunking), complete lines out, in arrival order; never holds more than
    ``max_line`` bytes. Linear in the input.

    :meth:`push` is for streams: the non-empty lines, with over-long lines counted in ``rejects``
    as ``overlong``. :meth:`feed` is for readers that number lines: every line (empty ones too, as
    ``b""``) and each over-long one as an :class:`Overlong` the caller counts.
    """

    def __init__(self, max_line: int, rejects: Rejects | None = None) -> None:
        self.max_line = max_line
        self.rejects = rejects if rejects is not None else Rejects("lines")
        self._buf = bytearray()
        self._dropping = False  # inside an over-long line, already reported: drop up to its end
        self._after_cr = False  # the last byte seen was a CR: an LF next is the same line end

    def push(self, data: bytes) -> list[bytes]:
        """The non-empty lines ``data`` completes; over-long ones counted, never returned."""
        lines: list[bytes] = []
        for item in self.feed(data):
            if isinstance(item, Overlong):
                self.rejects.reject("overlong", f"{item.length}+ bytes without a line end: {item.head!r}")
            elif item:
                lines.append(item)
        return lines

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        """Every line ``data`` completes (terminator removed), and an :class:`Overlong` where a
        line crossed the limit; the unterminated rest waits for the next call."""
        out: list[bytes | Overlong] = []
        size = len(data)
        pos = 0
        if self._after_cr and size:
            self._after_cr = False
            if data[0] == _LF:
                pos = 1
        while pos < size:
            m = _TERMINATOR.search(data, pos)
            if m is None:
                self._hold(data, pos, size, out)
                break
            end = m.start()
            if self._dropping:
                self._dropping = False
            elif not self._buf and end - pos <= self.max_line:
                out.append(data[pos:end])  # the common case: a whole line inside one read
            else:
                self._hold(data, pos, end, out)
                if self._dropping:
                    self._dropping = False
                else:
                    out.append(bytes(self._buf))
                    self._buf.clear()
            pos = end + 1
            if data[end] == _CR:
                if pos == size:
                    self._after_cr = True
                elif data[pos] == _LF:
                    pos += 1
        return out

    def finish(self) -> bytes | None:
        """The unterminated rest at the end of the stream (a file's last line), then reset; None
        when there is none or it was already reported as over-long."""
        rest = None if self._dropping or not self._buf else bytes(self._buf)
        self.reset()
        return rest

    def end(self) -> None:
        """The stream stopped (EOF, a disconnect): an unterminated line that is not blank never
        completed; it is counted as ``truncated``, never returned."""
        rest = self.finish()
        if rest is not None and rest.strip():
            self.rejects.reject("truncated", rest[:120])

    def reset(self) -> None:
        """Forget a partial line: a new connection never continues the old one's last line."""
        self._buf.clear()
        self._dropping = False
        self._after_cr = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held (at most ``max_line``)."""
        return len(self._buf)

    def _hold(self, data: bytes, start: int, end: int, out: list[bytes | Overlong]) -> None:
        """Keep ``data[start:end]`` as part of the current line, unless that passes the limit:
        the length is checked before anything is copied."""
        if self._dropping or start == end:
            return
        length = len(self._buf) + (end - start)
        if length > self.max_line:
            head = bytes(self._buf[:_HEAD]) + data[start : start + max(0, _HEAD - len(self._buf))]
            out.append(Overlong(length, head))
            self._dropping = True
            self._buf.clear()
        else:
            self._buf += data[start:end]
