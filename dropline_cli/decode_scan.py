"""``dropline decode scan FILE``: scanner lines (as a serial scanner sends them) to JSON lines.

One object per readable, non-empty line: ``{"line", "raw", "kind", ...fields, "symbology"?}``.
A file has no arrival times, so ``time`` is left out and ``line`` gives the 1-based line number
in the file instead (CR, LF and CRLF each end one line, as on the serial port). Unreadable lines
are counted and summarised on stderr; they never stop the run. A scan that breaks a GS1 rule (a
wrong check digit, an impossible date) is written as ``kind: unknown`` with its ``error`` and
``error_detail`` and its raw text, and also counted as rejected under that ``error``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dropline_cli.output import add_output_argument, input_file, output_stream, write_json_lines
from firmware_bridge.scanner.lines import MAX_LINE
from firmware_bridge.scanner.parse import invalid_reason
from firmware_bridge.scanner.serial_scanner import decode_file
from protocols.records import Scan
from protocols.rejects import Rejects


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


def run(args: argparse.Namespace) -> int:
    path = input_file(args.file)
    rejects = Rejects("decode-scan")
    kinds: Counter[str] = Counter()
    invalid = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal invalid
        for number, scan in decode_file(path, rejects, args.max_line):
            kinds[scan.kind] += 1
            reason = invalid_reason(scan)
            if reason is not None:
                invalid += 1
                rejects.reject(reason, f"line {number}: {scan.fields.get('error_detail', '')}")
            yield scan_row(scan, number)

    with output_stream(args.output) as out:
        n = write_json_lines(rows(), out)
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(rejects.counts.items())) or "none"
    print(
        f"{path}: {n} scans ({by_kind}), {invalid} of them breaking a GS1 rule; "
        f"{rejects.total} lines rejected ({by_reason})",
        file=sys.stderr,
    )
    return 0
