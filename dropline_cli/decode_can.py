"""``dropline decode can``: a recorded CAN log to JSON-lines signals through a DBC and a vehicle mapping."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dropline_cli.output import add_output_argument, input_file, output_stream, write_json_lines
from protocols.errors import UsageError

log = logging.getLogger("dropline.decode_can")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Decode a CAN log (candump -l .log, Vector .asc, .blf, python-can or SavvyCAN GVRET .csv) with a "
        'DBC; print {"t": seconds, "signal": name, "value": number} per signal. Signals are named '
        "<Message>.<Signal>, or by their COVESA VSS name where the mapping (--map) has one."
    )
    parser.add_argument("--dbc", type=Path, required=True, help="the vehicle's DBC file")
    parser.add_argument(
        "--map",
        dest="mapping",
        metavar="MAP",
        help="vehicle mapping: a shipped name (kona_ev, nissan_leaf_aze0, nissan_leaf_ze1, tesla_model3) "
        "or a TOML file",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--only-mapped",
        dest="only_mapped",
        action="store_const",
        const=True,
        help="print only the mapping's VSS signals (the shipped mappings do this by default)",
    )
    only.add_argument(
        "--all-signals",
        dest="only_mapped",
        action="store_const",
        const=False,
        help="with --map, also print the unmapped signals as <Message>.<Signal>",
    )
    parser.add_argument(
        "--channel",
        action="append",
        metavar="CH",
        help="keep only frames of this channel (repeatable): can0 in candump logs, the Bus number in "
        "GVRET CSV; a DBC describes one bus",
    )
    parser.add_argument("log", type=Path, metavar="LOG", help="the CAN log")
    add_output_argument(parser)


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.can.bus_driver import iter_signals_from_log
    from firmware_bridge.can.decoder import CanDecoder
    from protocols.errors import DbcError, LogFormatError, MappingError

    dbc = input_file(args.dbc)
    log_path = input_file(args.log)
    if args.only_mapped and not args.mapping:
        raise UsageError("--only-mapped: needs --map")
    try:
        decoder = CanDecoder.from_files(dbc, args.mapping, only_mapped=args.only_mapped)
    except (DbcError, MappingError) as exc:
        raise UsageError(str(exc)) from None
    channels = set(args.channel) if args.channel else None

    def rows() -> Iterator[dict[str, Any]]:
        for s in iter_signals_from_log(log_path, decoder, channels=channels):
            yield {"t": s.time, "signal": s.name, "value": s.value}

    try:
        with output_stream(args.output) as out:
            n = write_json_lines(rows(), out)
    except LogFormatError as exc:
        raise UsageError(str(exc)) from None
    stats = decoder.stats()
    print(
        f"decode can: {log_path}: {n} signals; rejected frames {stats['rejects'] or 'none'}; "
        f"frames of unneeded messages {stats['skipped']}; "
        f"unavailable values {stats['unavailable'] or 'none'}",
        file=sys.stderr,
    )
    return 0
