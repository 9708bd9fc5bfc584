"""``dropline geofence --fences FENCES.geojson TRACE``: geofence events of a trace.

Runs the van's detector (``agent/geofence.py``: hysteresis band, confirmation, poor fixes
ignored, pass-by suppression for ``stop`` fences) over the trace's fixes and prints one
``{"time", "fence", "event"}`` line per event, ``fence`` being the feature's ``id`` property.
Unusable trace lines are counted and skipped; ignored fixes are summarised on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dropline_cli.output import add_output_argument, input_file, output_stream, write_json_lines
from protocols.errors import InputError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fences", type=Path, required=True, help="GeoJSON FeatureCollection of fences")
    parser.add_argument("trace", type=Path, metavar="TRACE", help="JSON lines with time, lat, lon")
    parser.add_argument("--band-m", type=float, default=20.0, help="hysteresis band in metres (20)")
    parser.add_argument("--confirm-fixes", type=int, default=3, help="good fixes confirming a change (3)")
    parser.add_argument("--confirm-s", type=float, default=2.0, help="seconds a confirming run spans (2)")
    parser.add_argument(
        "--arrive-s", type=float, default=30.0, help="seconds inside a stop fence to arrive (30)"
    )
    parser.add_argument("--max-hdop", type=float, default=5.0, help="ignore fixes with a higher HDOP (5)")
    parser.add_argument("--require-3d", action="store_true", help="ignore 2D fixes")
    add_output_argument(parser)


def run(args: argparse.Namespace) -> int:
    from agent.geofence import Geofence, Rules, load_fences
    from firmware_bridge.gps.tpv import read_trace
    from protocols.records import iso_time
    from protocols.rejects import Rejects

    rules = Rules(
        band_m=args.band_m,
        confirm_fixes=args.confirm_fixes,
        confirm_s=args.confirm_s,
        arrive_s=args.arrive_s,
        max_hdop=args.max_hdop,
        require_3d=args.require_3d,
    )
    rejects = Rejects("trace")
    try:
        geofence = Geofence(load_fences(input_file(args.fences)), rules)
        trace = input_file(args.trace)

        def rows() -> Iterator[dict[str, Any]]:
            for fix in read_trace(trace, rejects):
                for t, fence, event, _, _ in geofence.update(fix.time, fix.lat, fix.lon, fix.mode, fix.hdop):
                    yield {"time": iso_time(t), "fence": fence, "event": event}

        with output_stream(args.output) as out:
            count = write_json_lines(rows(), out)
    except (InputError, OSError) as exc:
        raise UsageError(f"geofence: {exc}") from exc
    print(
        f"geofence: {args.trace}: {count} events; rejected lines {rejects.as_dict() or 'none'}; "
        f"ignored fixes {geofence.ignored or 'none'}",
        file=sys.stderr,
    )
    return 0
