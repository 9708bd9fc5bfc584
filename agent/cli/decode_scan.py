"""``dropline decode scan FILE``: scanner lines (as a serial scanner sends them) to JSON lines.

One object per readable, non-empty line: ``{"line", "raw", "kind", ...fields, "symbology"?}``.
A file has no arrival times, so ``time`` is left out and ``line`` gives the 1-based line number
in the file instead (CR, LF and CRLF each end one line, as on the serial port). Unreadable lines
are counted and summarised on stderr; they never stop the run.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.cli.output import add_output_argument, input_file, output_stream, write_json_lines
from agent.records import Scan
from firmware_bridge.rejects import Rejects
from firmware_bridge.scanner.lines import MAX_LINE, LineAssembler, Overlong, UnreadableLine, decode_line
from firmware_bridge.scanner.parse import parse_scan

HELP = "barcode scanner lines to scans (SSCC, GTIN, GS1, courier tracking)"
EXAMPLE = "dropline decode scan tests/data/barcodes/scans_raw.txt"
_CHUNK = 1 << 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="scanner lines, CR, LF or CRLF terminated")
    parser.add_argument(
        "--max-line", type=int, default=MAX_LINE, help=f"longest accepted line in bytes (default {MAX_LINE})"
    )
    add_output_argument(parser)


def scan_row(scan: Scan, line: int) -> dict[str, Any]:
    """The JSON object for one scan; ``fields`` are flattened next to ``raw`` and ``kind``."""
    row: dict[str, Any] = {"line": line, "raw": scan.raw, "kind": scan.kind}
    row.update(scan.fields)
    if scan.symbology is not None:
        row["symbology"] = scan.symbology
    return row


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


def run(args: argparse.Namespace) -> int:
    path = input_file(args.file)
    rejects = Rejects("decode-scan")
    kinds: Counter[str] = Counter()

    def rows() -> Iterator[dict[str, Any]]:
        for number, scan in decode_file(path, rejects, args.max_line):
            kinds[scan.kind] += 1
            yield scan_row(scan, number)

    with output_stream(args.output) as out:
        n = write_json_lines(rows(), out)
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(rejects.counts.items())) or "none"
    print(f"{path}: {n} scans ({by_kind}); {rejects.total} lines rejected ({by_reason})", file=sys.stderr)
    return 0
