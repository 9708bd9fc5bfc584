"""Scanner bytes to lines, and a line's bytes to text: pure, shared by the serial driver and the CLI.

Scanners end a read with CR, LF or CRLF, as configured. Python's ``splitlines`` must not be used
on scan data: it also splits at GS (0x1D, the FNC1 separator), FS and RS. Here only CR and LF end a
line, a CRLF counts once (even split across two reads), and a line that grows past ``max_line``
bytes without a terminator is reported once, as soon as it crosses the limit, and then dropped up to
its terminator, so a scanner streaming junk costs bounded memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.errors import InputError

MAX_LINE = 4096
_TERMINATOR = re.compile(rb"[\r\n]")
# C0 controls a scanner never sends inside a read. Allowed: TAB, GS (FNC1), FS, RS and EOT, which
# ISO/IEC 15434 messages (``[)>`` RS ... GS ... RS EOT, e.g. MaxiCode parcel labels) use.
_JUNK = re.compile(r"[\x01-\x03\x05-\x08\x0b\x0c\x0e-\x1b\x7f]")


@dataclass(frozen=True, slots=True)
class Overlong:
    """A line dropped because it passed the length limit (``length`` bytes held at that moment)
    before its terminator arrived."""

    length: int


class LineAssembler:
    """Bytes in (any chunking), complete lines out: ``bytes`` (possibly empty: two terminators in
    a row, which callers skip but a file reader still counts as a line) or :class:`Overlong`, in
    arrival order. Linear in the input."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._dropping = False  # inside an over-long line, already reported: drop up to its end
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        out: list[bytes | Overlong] = []
        pos = 1 if self._after_cr and data[:1] == b"\n" else 0
        if data:
            self._after_cr = False
        for m in _TERMINATOR.finditer(data, pos):
            start = m.start()
            if start < pos:  # the LF of a CRLF, already consumed
                continue
            self._take(data[pos:start], out)
            if self._dropping:
                self._dropping = False
            else:
                out.append(bytes(self._buf))
            self._buf.clear()
            pos = start + 1
            if data[start] == 0x0D:
                if pos == len(data):
                    self._after_cr = True
                elif data[pos] == 0x0A:
                    pos += 1
        self._take(data[pos:], out)
        return out

    def finish(self) -> bytes | None:
        """The unterminated rest at the end of the stream (a file's last line), then reset."""
        rest = None if self._dropping or not self._buf else bytes(self._buf)
        self.reset()
        return rest

    def reset(self) -> None:
        self._buf.clear()
        self._dropping = False
        self._after_cr = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held."""
        return len(self._buf)

    def _take(self, piece: bytes, out: list[bytes | Overlong]) -> None:
        if not piece or self._dropping:
            return
        if len(self._buf) + len(piece) > self.max_line:
            out.append(Overlong(len(self._buf) + len(piece)))
            self._dropping = True
            self._buf.clear()
        else:
            self._buf += piece


class UnreadableLine(InputError):
    """A line that is not a scan; ``reason`` is the short reject reason."""

    def __init__(self, reason: str, line: bytes) -> None:
        super().__init__(f"{reason}: {line[:80]!r}")
        self.reason = reason
        self.line = line


def decode_line(line: bytes) -> str:
    """The text of one line; raises UnreadableLine for NUL bytes (``nul``), bytes that are not
    UTF-8 (``invalid_utf8``) or other control characters (``control``)."""
    if b"\x00" in line:
        raise UnreadableLine("nul", line)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableLine("invalid_utf8", line) from None
    if _JUNK.search(text):
        raise UnreadableLine("control", line)
    return text
