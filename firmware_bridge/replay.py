"""Replay of recorded readings through the ordinary driver interface: the demo, the van
simulator and the fault tests drive the real agent with real captures this way. Also the reader
of scan files, timed or not, which ``dropline replay`` shares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from firmware_bridge.driver import Driver
from firmware_bridge.scanner.lines import MAX_LINE, LineAssembler, Overlong, UnreadableLine, decode_line
from firmware_bridge.scanner.parse import parse_scan
from protocols.records import Scan, parse_iso_time
from protocols.rejects import Rejects

T = TypeVar("T")


def shifted(reading: T, offset_s: float) -> T:
    """The same reading, ``offset_s`` later (every reading type has a ``time`` field)."""
    if offset_s == 0:
        return reading
    return dataclasses.replace(reading, time=reading.time + offset_s)  # type: ignore[type-var, attr-defined]


class ReplayDriver(Driver[T]):
    """Emits recorded readings, ``interval_s`` apart (0 = as fast as the agent takes them).

    With ``repeat`` > 1 the recording plays again, shifted in time to follow the last pass, so a
    short capture can stand for a long drive. After the last reading the driver stays idle.
    """

    kind = "replay"

    def __init__(
        self, name: str, load: Callable[[], Iterable[T]], interval_s: float = 0.0, repeat: int = 1
    ) -> None:
        super().__init__(name)
        self._load = load
        self._interval = interval_s
        self._repeat = max(1, repeat)
        self._readings: list[T] = []
        self._pos = 0
        self._period = 0.0

    def _open(self) -> None:
        if not self._readings:
            self._readings = list(self._load())
            times = [r.time for r in self._readings]  # type: ignore[attr-defined]
            self._period = (max(times) - min(times) + 1.0) if times else 0.0

    def _read(self, timeout: float) -> Sequence[T]:
        total = len(self._readings) * self._repeat
        if self._pos >= total:
            self._stop.wait(timeout)
            return ()
        if self._interval > 0:
            self._stop.wait(self._interval)
            count = 1
        else:
            count = 256
        out: list[T] = []
        for _ in range(min(count, total - self._pos)):
            rep, i = divmod(self._pos, len(self._readings))
            out.append(shifted(self._readings[i], rep * self._period))
            self._pos += 1
        return out

    def _close(self) -> None:
        pass


@dataclasses.dataclass(frozen=True, slots=True)
class ScanLine:
    """One readable line of a scan file: its 1-based line number, its time (``None`` when the
    line is untimed) and the scan (whose ``time`` is the line's, or 0.0 when untimed)."""

    number: int
    time: float | None
    scan: Scan


def parse_scan_line(text: str, number: int) -> ScanLine:
    """``TIME<TAB>RAW`` (TIME ISO 8601, UTC when it names no zone) or ``RAW`` (untimed: a line
    without a tab). Raises ``UnreadableLine`` (``bad_time``) when the text before the first tab is
    not a time; the raw part is parsed as a scanner line and never rejected."""
    stamp, tab, raw = text.partition("\t")
    if not tab:
        return ScanLine(number, None, parse_scan(text, 0.0))
    try:
        t = parse_iso_time(stamp.strip())
    except (ValueError, OverflowError):
        raise UnreadableLine("bad_time", text.encode("utf-8", "replace")) from None
    return ScanLine(number, t, parse_scan(raw, t))


def read_scan_file(path: Path, rejects: Rejects, max_line: int = MAX_LINE) -> Iterator[ScanLine]:
    """Every readable line of a scan file, streamed; unreadable lines (``overlong``, ``nul``,
    ``invalid_utf8``, ``control``, ``bad_time``) are counted in ``rejects`` and skipped, empty
    lines skipped. Line ends are CR, LF or CRLF only (GS, the FNC1 separator, is data)."""
    assembler = LineAssembler(max_line)
    number = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            for item in assembler.feed(chunk):
                number += 1
                line = _scan_line(item, number, rejects)
                if line is not None:
                    yield line
    rest = assembler.finish()
    if rest is not None:
        line = _scan_line(rest, number + 1, rejects)
        if line is not None:
            yield line


def _scan_line(item: bytes | Overlong, number: int, rejects: Rejects) -> ScanLine | None:
    if isinstance(item, Overlong):
        rejects.reject("overlong", f"line {number}: {item.length}+ bytes")
        return None
    if not item:
        return None
    try:
        return parse_scan_line(decode_line(item), number)
    except UnreadableLine as exc:
        rejects.reject(exc.reason, f"line {number}: {exc.line[:80]!r}")
        return None
