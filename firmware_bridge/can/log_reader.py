"""Recorded CAN logs to ``can.Message`` objects, reading past bad input.

Text formats (candump ``-l`` ``.log``, Vector ``.asc``, python-can ``.csv``, PCAN ``.trc``) go
through python-can's own readers one line at a time: when a reader raises on a line, the line is
counted as ``bad log line`` (with its number) and the same reader, with the state it took from the
file's header, is started again on the next line. Lines a reader skips by design (comments,
statistics, events other than frames) are not counted. SavvyCAN GVRET ``.csv`` has its own reader
(:mod:`firmware_bridge.can.gvret`). Binary ``.blf`` cannot be resynchronised after corrupt
data: the frames before it come out and the rest (or a cut-off end) counts once as ``unreadable
rest``. A file that cannot be read at all raises :class:`LogFormatError` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from firmware_bridge.can.gvret import is_gvret_csv, read_gvret
from firmware_bridge.can.log_lines import LogLines
from protocols.errors import LogFormatError
from protocols.rejects import Rejects

log = logging.getLogger("dropline.can")

# suffix -> what a reader restarted after a bad line is fed first: its header logic takes this line
# and goes on (ASC's header scan stops at a blank line, python-can's CSV skips one header line,
# candump skips blank lines, TRC's header scan passes over a ";" comment)
_RESTART_LINE = {".log": "\n", ".asc": "\n", ".csv": "\n", ".trc": ";\n"}
LOG_SUFFIXES = (*_RESTART_LINE, ".blf", ".mf4")


def read_frames(path: Path, rejects: Rejects) -> Iterator[Any]:
    """``can.Message`` objects of a candump, ASC, TRC, BLF, MF4, python-can CSV or GVRET CSV log.

    Raises :class:`LogFormatError` (naming the file), when iterated, only for a file that cannot be
    read at all: missing, an unknown suffix or CSV header, a bad BLF header, MF4 without ``asammdf``.
    """
    path = Path(path)
    if not path.is_file():
        raise LogFormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in LOG_SUFFIXES:
        raise LogFormatError(f"{path}: unknown CAN log suffix {suffix!r} (known: {', '.join(LOG_SUFFIXES)})")
    if suffix in _RESTART_LINE:
        yield from _text_frames(path, suffix, rejects)
    else:
        yield from _binary_frames(path, rejects)


def _text_frames(path: Path, suffix: str, rejects: Rejects) -> Iterator[Any]:
    from can.io.asc import ASCReader
    from can.io.canutils import CanutilsLogReader
    from can.io.csv import CSVReader
    from can.io.trc import TRCReader

    try:
        f = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        lines = LogLines(f, path, rejects)
        if suffix == ".csv":
            first = next(lines, "")
            if is_gvret_csv(first):
                yield from read_gvret(lines, first, path, rejects)
                return
            if not first.startswith("timestamp,arbitration_id"):
                raise LogFormatError(
                    f"{path}: unknown CSV header {first.strip()[:60]!r}; expected python-can's "
                    "'timestamp,arbitration_id,...' or SavvyCAN GVRET's 'Time Stamp,ID,Extended,...'"
                )
            lines.push(first)
        readers = {".log": CanutilsLogReader, ".asc": ASCReader, ".csv": CSVReader, ".trc": TRCReader}
        reader = readers[suffix](cast(TextIO, lines))
        failed_at = -1
        while True:
            try:
                yield from reader
                return
            except Exception as exc:  # python-can's readers raise assorted errors for one bad line
                if lines.lineno == failed_at:  # the restart itself failed: no way forward
                    rejects.reject("unreadable rest", f"{path}:{lines.lineno}: {exc}")
                    return
                failed_at = lines.lineno
                rejects.reject("bad log line", f"{path}:{lines.lineno}: {exc}")
                lines.push(_RESTART_LINE[suffix])


def _binary_frames(path: Path, rejects: Rejects) -> Iterator[Any]:
    import can

    try:
        reader = can.LogReader(path)
    except NotImplementedError as exc:  # MF4 without asammdf
        raise LogFormatError(f"{path}: cannot read this format here: {exc}") from None
    except Exception as exc:  # BLFParseError, struct.error, OSError... on a bad header
        raise LogFormatError(f"{path}: not a readable CAN log: {exc}") from None
    with reader:
        n = 0
        try:
            for message in reader:
                n += 1
                yield message
        except Exception as exc:  # corrupt objects (zlib.error, struct.error, BLFParseError)
            rejects.reject("unreadable rest", f"{path}: after frame {n}: {exc}")
            log.error("%s: unreadable after frame %d (%s); rest of the file skipped", path, n, exc)
            return
    declared = getattr(reader, "file_size", 0)  # BLF's header gives the finished file's size
    if declared > path.stat().st_size:  # python-can ends a cut-off BLF silently
        rejects.reject("unreadable rest", f"{path}: cut off after frame {n}: header says {declared} bytes")
