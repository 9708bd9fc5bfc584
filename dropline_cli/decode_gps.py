"""``dropline decode gps FILE``: an NMEA 0183 log (or gpsd JSON) to fixes, one JSON line per epoch.

The output uses gpsd's TPV field names (``time``, ``mode``, ``lat``, ``lon``, ``altMSL``, ``speed``
in m/s, ``track``, ``hdop``, ``sats``), so it can be compared line by line with what gpsd says
about the same capture. Unusable lines are counted, the first few logged, and summarised on
stderr at the end; they never stop the run. A file with nothing decodable in it is a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dropline_cli.output import add_output_argument, input_file, output_stream, write_json_lines
from firmware_bridge.gps.gpsd_client import iter_fixes_from_gpsd_json
from firmware_bridge.gps.nmea import NmeaDecoder
from firmware_bridge.gps.serial_nmea import iter_lines_from_file
from firmware_bridge.gps.tpv import fix_to_tpv
from protocols.errors import UsageError
from protocols.records import Fix
from protocols.rejects import Rejects


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="NMEA log (raw receiver output) or gpsd JSON")
    parser.add_argument(
        "--format",
        choices=("nmea", "gpsd"),
        default="nmea",
        help="nmea: NMEA 0183 sentences (default); gpsd: gpsd JSON lines (TPV reports, e.g. gpspipe -w)",
    )
    parser.add_argument(
        "--require-checksum",
        action="store_true",
        help="reject sentences without *hh (gpsd, and by default this decoder, accept them)",
    )
    add_output_argument(parser)


def nmea_fixes(path: Path, decoder: NmeaDecoder, first_bad: list[int]) -> Iterator[Fix]:
    """Fixes of an NMEA log; the number of the first rejected line is appended to ``first_bad``."""
    rejects = decoder.rejects
    for number, line in enumerate(iter_lines_from_file(path), 1):
        before = rejects.total
        yield from decoder.feed(line)
        if not first_bad and rejects.total > before:
            first_bad.append(number)
    yield from decoder.flush()


def gpsd_fixes(path: Path, rejects: Rejects) -> Iterator[Fix]:
    """One fix per epoch from gpsd JSON: gpsd reports an epoch several times as sentences
    arrive, each more complete; the epoch's reports are merged into one fix."""
    with path.open("rb") as f:
        yield from iter_fixes_from_gpsd_json(f, rejects, per_epoch=True)


def run(args: argparse.Namespace) -> int:
    path = input_file(args.file)
    rejects = Rejects("decode-gps")
    decoder = NmeaDecoder(rejects, require_checksum=args.require_checksum)
    first_bad: list[int] = []
    fixes = gpsd_fixes(path, rejects) if args.format == "gpsd" else nmea_fixes(path, decoder, first_bad)

    def rows() -> Iterator[dict[str, Any]]:
        for fix in fixes:
            yield fix_to_tpv(fix)

    with output_stream(args.output) as out:
        n = write_json_lines(rows(), out)
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(rejects.counts.items())) or "none"
    if args.format == "nmea":
        used, skipped = decoder.stats["used"], decoder.stats["skipped"]
        if n == 0 and used == 0 and rejects.total:
            line = first_bad[0] if first_bad else 1
            raise UsageError(
                f"{path}: line {line}: not an NMEA sentence, and no usable sentence in the whole file "
                f"({by_reason}); gpsd JSON needs --format gpsd"
            )
        print(
            f"{path}: {n} fixes from {used} sentences ({skipped} of other types skipped); "
            f"{rejects.total} rejected ({by_reason})",
            file=sys.stderr,
        )
    else:
        print(f"{path}: {n} fixes; {rejects.total} lines rejected ({by_reason})", file=sys.stderr)
    return 0
