"""``dropline export``: what the collector stored, as JSON lines, each with ``vehicle`` and ``seq``.

``--kind vehicles`` prints each vehicle's delivery progress instead: ``{vehicle, contiguous,
max_seq, records, open_gaps: [[a, b], ...], explained_gaps: [[a, b], ...], quarantined: [[a, b],
...], position?}``. ``--kind quarantine`` prints the records the collector held aside: ``{vehicle,
seq, kind, reason, received, body_base64}`` (the bytes as the van sent them). Every line is strict
JSON (no NaN: the collector quarantines non-finite values). Reads with its own connection, so it
works while a collector is writing to the same file. ``--db`` is the SQLite file or the
``postgresql://`` URL the collector was given (read only: nothing is created or migrated).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dropline_cli.output import add_output_argument, output_stream, write_json_lines
from protocols.errors import UsageError

# Every record kind the store exports (protocols.convert.KINDS names, plus "events" and "all"),
# the per-vehicle progress and the quarantine; written out so --help needs no import of the store.
KINDS = (
    "fixes",
    "signals",
    "scans",
    "alerts",
    "gaps",
    "fence_events",
    "stops",
    "deliveries",
    "etas",
    "blobs",
    "documents",
    "events",
    "all",
    "vehicles",
    "quarantine",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        metavar="PATH|URL",
        help="the collector's store: its SQLite file or its postgresql:// URL",
    )
    parser.add_argument("--vehicle", metavar="V", help="only this vehicle")
    parser.add_argument(
        "--kind",
        required=True,
        choices=KINDS,
        help="record kind to print; 'events' prints fence events and stop updates, 'all' every "
        "record, 'vehicles' the per-vehicle progress, 'quarantine' the records held aside with "
        "their reason",
    )
    add_output_argument(parser)


def _rows(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from cloud.collector import open_store

    store = open_store(args.db, readonly=True)
    try:
        if args.kind == "vehicles":
            for progress in store.vehicles():
                if args.vehicle is None or progress.vehicle == args.vehicle:
                    yield progress.as_json()
        else:
            yield from store.export(args.kind, args.vehicle)
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    from cloud.collector import POSTGRES_SCHEMES

    if args.db.startswith(POSTGRES_SCHEMES):
        import psycopg

        from cloud.store_postgres import SchemaError, redact

        try:
            with output_stream(args.output) as out:
                write_json_lines(_rows(args), out)
        except (psycopg.Error, SchemaError) as exc:
            raise UsageError(f"{redact(args.db)}: cannot read the store: {exc}") from exc
        return 0
    if not Path(args.db).is_file():
        raise UsageError(f"{args.db}: no such file")
    import sqlite3

    try:
        with output_stream(args.output) as out:
            write_json_lines(_rows(args), out)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{args.db}: not a collector store: {exc}") from exc
    return 0
