"""SavvyCAN's GVRET CSV logs, which python-can's ``.csv`` reader does not understand.

python-can's CSV format is ``timestamp,arbitration_id,extended,remote,error,dlc,data`` (base64
data); SavvyCAN writes ``Time Stamp,ID,Extended,[Dir,]Bus,LEN,D1..D8`` with the time in
microseconds and one hex byte per column. Given a GVRET file, ``can.LogReader`` fails on the first
row with "too many values to unpack", so such files are read here, row by row: a bad row is
counted and skipped, the rows around it still come through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocols.rejects import Rejects

HEADER_START = "Time Stamp,ID,Extended"


def is_gvret_csv(first_line: str) -> bool:
    return first_line.lstrip("\ufeff").startswith(HEADER_START)


def read_gvret(path: Path, rejects: Rejects) -> Iterator[Any]:
    """``can.Message`` objects from a GVRET CSV; ``channel`` is the ``Bus`` column (an int)."""
    import can

    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        header = [h.strip() for h in f.readline().lstrip("\ufeff").split(",")]
        try:
            col_t, col_id, col_ext = header.index("Time Stamp"), header.index("ID"), header.index("Extended")
            col_len = header.index("LEN")
        except ValueError:
            raise ValueError(f"{path}: not a GVRET CSV header: {','.join(header)!r}") from None
        col_bus = header.index("Bus") if "Bus" in header else None
        data_cols = [i for i, h in enumerate(header) if h[:1] == "D" and h[1:].isdigit()]
        for lineno, line in enumerate(f, start=2):
            row = line.rstrip("\r\n").split(",")
            if row == [""]:
                continue
            try:
                length = int(row[col_len])
                if not 0 <= length <= len(data_cols):
                    raise ValueError(f"LEN {length}")
                data = bytes(int(row[data_cols[i]], 16) for i in range(length))
                extended = row[col_ext].strip().lower()
                if extended not in ("true", "false"):
                    raise ValueError(f"Extended {extended!r}")
                message = can.Message(
                    timestamp=int(row[col_t]) / 1e6,
                    arbitration_id=int(row[col_id], 16),
                    is_extended_id=extended == "true",
                    channel=int(row[col_bus]) if col_bus is not None else None,
                    dlc=length,
                    data=data,
                    check=True,
                )
            except (ValueError, IndexError, TypeError) as exc:
                rejects.reject("bad log line", f"{path}:{lineno}: {exc}")
                continue
            yield message
