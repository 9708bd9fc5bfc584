"""The lines of a text CAN log, each capped in length, with the number of the line last handed out.

A log line longer than :data:`MAX_LINE` characters is no CAN frame in any text format we read (a
CAN FD frame in Vector ASC, the longest, is about 300), and handing megabytes to a parser costs
seconds per line; so such a line is counted as ``overlong`` and skipped unread, its rest consumed
in fixed-size pieces. python-can's text readers take this object as their file: they only iterate
it (``next``) and close it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from protocols.rejects import Rejects

MAX_LINE = 4096  # characters, without the line end
_CHUNK = 1 << 16


class LogLines:
    """Iterates the lines of an open text file; ``lineno`` is the 1-based number of the last one.

    :meth:`push` puts a line in front of the next one (numbered as the line before it); readers
    restarted after a bad line use it to feed their header logic a harmless line.
    """

    def __init__(self, f: TextIO, path: Path, rejects: Rejects) -> None:
        self.lineno = 0
        self._f = f
        self._path = path
        self._rejects = rejects
        self._pushed: list[str] = []

    def __iter__(self) -> LogLines:
        return self

    def __next__(self) -> str:
        if self._pushed:
            return self._pushed.pop()
        while True:
            line = self._f.readline(MAX_LINE + 1)
            if not line:
                raise StopIteration
            self.lineno += 1
            if len(line) <= MAX_LINE or line.endswith("\n"):
                return line
            rest = self._f.readline(_CHUNK)
            while rest and not rest.endswith("\n"):
                rest = self._f.readline(_CHUNK)
            self._rejects.reject("overlong", f"{self._path}:{self.lineno}: more than {MAX_LINE} characters")

    def push(self, line: str) -> None:
        self._pushed.append(line)

    def close(self) -> None:
        """Nothing: the file belongs to whoever opened it (python-can's readers call this when done)."""
