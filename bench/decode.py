"""Decoding throughput, ours vs the plain library loops, in one run:

* NMEA sentences per second: ``NmeaDecoder`` vs ``pynmea2.parse`` over every gpsd log line;
* CAN frames per second: ``CanDecoder`` (kona_ev mapping) vs ``db.decode_message`` over the
  Kona EV candump log.

    .venv/bin/python -m bench.decode [--repeat 7]

Prints absolute figures and ratios (ours / peer; goal >= 1.0) as text and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench.decode_can import DEFAULT_DBC, DEFAULT_LOG, bench_can
from bench.decode_nmea import bench_nmea

NMEA_LOGS = sorted((Path(__file__).resolve().parents[1] / "tests" / "data" / "nmea" / "gpsd").glob("*.log"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="runs of each loop; the best counts")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # rejected frames are expected here; do not time the logging
    nmea = bench_nmea(NMEA_LOGS, args.repeat)
    can = bench_can(DEFAULT_LOG, DEFAULT_DBC, args.repeat)
    print(
        f"NMEA: ours {nmea['ours_sentences_per_s']:,.0f} sentences/s, plain pynmea2 "
        f"{nmea['pynmea2_sentences_per_s']:,.0f} sentences/s, ratio {nmea['ratio']:.2f} "
        f"(compiled extension: {nmea['compiled']})"
    )
    print(
        f"CAN:  ours {can['ours_fps']:,.0f} frames/s, plain cantools "
        f"{can['plain_cantools_fps']:,.0f} frames/s, ratio {can['ratio']:.2f}"
    )
    print(
        f"      without a mapping (every DBC signal a record): ours {can['ours_all_signals_fps']:,.0f} "
        f"frames/s, ratio {can['ratio_all_signals']:.2f} to the bare loop, "
        f"{can['ratio_all_signals_same_output']:.2f} to the plain loop making the same records"
    )
    print(json.dumps({"nmea": nmea, "can": can}, default=str))
    return 0 if nmea["ratio"] >= 1.0 and can["ratio"] >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
