"""``dropline blob list`` / ``blob get``: the photos and signatures the collector reassembled.

``list`` prints one JSON line per blob: ``{vehicle, blob, media_type, delivery, sha256, count,
time_ms, size, complete, reason, parts}`` (``reason`` non-empty for a blob set aside, e.g.
``sha256_mismatch``). ``get`` writes the verified bytes of one complete blob to ``-o FILE``; a
blob that is incomplete, set aside or unknown is an error naming which. Reads the ``<db>.blobs``
file beside the collector's SQLite store with its own connection (works while it runs), or the
``blobs`` table of a PostgreSQL store (``--db postgresql://...``).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from dropline_cli.output import add_output_argument, output_stream, write_json_lines
from protocols.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="the collector's store: SQLite file or postgresql:// URL")
    parser.add_argument("--vehicle", metavar="V", required=parser.prog.endswith("get"), help="the van")
    if parser.prog.endswith("get"):
        parser.add_argument("blob", help="the blob id (from blob list or export --kind blobs)")
    add_output_argument(parser)


def run(args: argparse.Namespace) -> int:
    from cloud.blobs import Blobs, blobs_path
    from cloud.sqldb import SqlDb, is_postgres

    postgres = is_postgres(args.db)
    if postgres:
        from cloud.store_postgres import redact

        path: Path | str = redact(args.db)  # named in errors: never a password
    else:
        path = blobs_path(args.db)
        if not Path(args.db).is_file():
            raise UsageError(f"{args.db}: no such file")
        if not path.is_file():
            raise UsageError(f"{path}: no blobs yet (the collector writes it when the first chunk arrives)")
    try:
        blobs = Blobs(SqlDb(args.db)) if postgres else Blobs(path, readonly=True)
        try:
            if args._path[-1] == "list":
                with output_stream(args.output) as out:
                    write_json_lines(blobs.list(args.vehicle), out)
                return 0
            data = blobs.get(args.vehicle, args.blob)
            if data is None:
                known = [b for b in blobs.list(args.vehicle) if b["blob"] == args.blob]
                why = (
                    f"set aside ({known[0]['reason']})"
                    if known and known[0]["reason"]
                    else f"incomplete ({known[0]['parts']} of {known[0]['count']} chunks)"
                    if known
                    else "unknown"
                )
                raise UsageError(f"{path}: blob {args.blob} of {args.vehicle} is {why}")
        finally:
            blobs.close()
    except (sqlite3.DatabaseError, OSError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    except Exception as exc:  # psycopg.Error: unreachable, refused
        if not postgres:
            raise
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    if args.output is None:
        sys.stdout.buffer.write(data)
    else:
        args.output.write_bytes(data)
    return 0
