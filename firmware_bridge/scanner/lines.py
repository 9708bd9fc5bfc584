"""Scanner lines: the limit on a read, and a line's bytes to text; pure, shared by the serial
driver, the CLI and replay.

Scanners end a read with CR, LF or CRLF, as configured; lines are assembled by the shared
:class:`firmware_bridge.lines.LineAssembler` (re-exported here), which splits only there, never at
GS (0x1D, the FNC1 separator), FS or RS as ``str.splitlines`` would.
"""

from __future__ import annotations

import re

from firmware_bridge.lines import LineAssembler, Overlong
from protocols.errors import InputError

MAX_LINE = 4096
# C0 controls a scanner never sends inside a read. Allowed: TAB, GS (FNC1), FS, RS and EOT, which
# ISO/IEC 15434 messages (``[)>`` RS ... GS ... RS EOT, e.g. MaxiCode parcel labels) use.
_JUNK = re.compile(r"[\x01-\x03\x05-\x08\x0b\x0c\x0e-\x1b\x7f]")

__all__ = ["MAX_LINE", "LineAssembler", "Overlong", "UnreadableLine", "decode_line"]


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
