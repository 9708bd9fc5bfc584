"""SavvyCAN's GVRET CSV logs, which python-can's ``.csv`` reader does not understand.

python-can's CSV format is ``timestamp,arbitration_id,extended,remote,error,dlc,data`` (base64
data); SavvyCAN writes ``Time Stamp,ID,Extended,[Dir,]Bus,LEN,D1..D8`` with the time in
microseconds and one hex byte per column. Given a GVRET file, ``can.LogReader`` fails on the first
row with "too many values to unpack", so such files are read here, row by row: a bad row is
counted and skipped, the rows around it still come through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firmware_bridge.can.log_lines import LogLines
from protocols.errors import LogFormatError
from protocols.rejects import Rejects

HEADER_START = "Time Stamp,ID,Extended"
_DECIMAL = re.compile(r"[0-9]{1,20}")  # microseconds, bus and length: plain digits, as SavvyCAN writes them
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _decimal(field: str, name: str) -> int:
    if not _DECIMAL.fullmatch(field):
        raise ValueError(f"{name} {field[:30]!r}: not a decimal number")
    return int(field)


def _hex(field: str, name: str, digits: int) -> int:
    if len(field) > digits or not _HEX.fullmatch(field):
        raise ValueError(f"{name} {field[:30]!r}: not a hex number")
    return int(field, 16)


def is_gvret_csv(first_line: str) -> bool:
    return first_line.lstrip("\ufeff").startswith(HEADER_START)


def read_gvret(lines: LogLines, header_line: str, path: Path, rejects: Rejects) -> Iterator[Any]:
    """``can.Message`` objects from the rows after ``header_line``; ``channel`` is the ``Bus`` column.

    Fields must be as SavvyCAN writes them (decimal digits, hex digits, ``true``/``false``); a bad
    row is counted as ``bad log line``. Raises :class:`LogFormatError` if the header lacks a column.
    """
    import can

    header = [h.strip() for h in header_line.lstrip("\ufeff").split(",")]
    try:
        col_t, col_id, col_ext = header.index("Time Stamp"), header.index("ID"), header.index("Extended")
        col_len = header.index("LEN")
    except ValueError:
        raise LogFormatError(f"{path}: not a GVRET CSV header: {','.join(header)[:120]!r}") from None
    col_bus = header.index("Bus") if "Bus" in header else None
    data_cols = [i for i, h in enumerate(header) if h[:1] == "D" and h[1:].isdigit()]
    for line in lines:
        row = line.rstrip("\r\n").split(",")
        if row == [""]:
            continue
        try:
            length = _decimal(row[col_len], "LEN")
            if length > len(data_cols):
                raise ValueError(f"LEN {length}: more than the {len(data_cols)} data columns")
            data = bytes(_hex(row[data_cols[i]], f"D{i + 1}", 2) for i in range(length))
            extended = row[col_ext].strip().lower()
            if extended not in ("true", "false"):
                raise ValueError(f"Extended {extended!r}")
            message = can.Message(
                timestamp=_decimal(row[col_t], "Time Stamp") / 1e6,
                arbitration_id=_hex(row[col_id], "ID", 8),
                is_extended_id=extended == "true",
                channel=_decimal(row[col_bus], "Bus") if col_bus is not None else None,
                dlc=length,
                data=data,
                check=True,
            )
        except (ValueError, IndexError) as exc:  # can.Message(check=True) raises ValueError too
            rejects.reject("bad log line", f"{path}:{lines.lineno}: {exc}")
            continue
        yield message
