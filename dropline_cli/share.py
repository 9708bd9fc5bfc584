"""``dropline share STOP --db PATH|URL``: an unguessable, expiring tracking link for one stop.

The van is found from the manifests (``--manifests DIR``) or the stored stop records, or named
with ``--vehicle``. stdout: ``{"url", "path", "stop", "vehicle", "expires"}``; the link is the
customer's only credential and shows nothing of other stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protocols.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stop", metavar="STOP", help="the stop id (as in the manifest)")
    parser.add_argument(
        "--db",
        required=True,
        metavar="PATH|URL",
        help="the collector's store: SQLite file or postgresql:// URL",
    )
    parser.add_argument("--vehicle", metavar="V", help="the van (found from manifests or records if omitted)")
    parser.add_argument("--manifests", type=Path, metavar="DIR", help="directory of manifest JSON files")
    parser.add_argument(
        "--ttl-h", type=float, default=24.0, metavar="H", help="valid for H hours (default 24)"
    )
    parser.add_argument(
        "--base", default="http://127.0.0.1:8080", metavar="URL", help="the collector's public base URL"
    )


def run(args: argparse.Namespace) -> int:
    from cloud.api import manifests, share
    from cloud.collector import open_store
    from cloud.sqldb import SqlDb, is_postgres
    from cloud.tokens import Tokens

    if not is_postgres(args.db) and not Path(args.db).exists():
        raise UsageError(f"--db {args.db}: no such store")
    store = open_store(args.db, readonly=True)
    db = SqlDb(args.db)
    try:
        body = {"stop": args.stop, "vehicle": args.vehicle, "ttl_s": args.ttl_h * 3600}
        out = share.create(body, db, store, Tokens(db), manifests.load(args.manifests))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        store.close()
        db.close()
    sys.stdout.write(json.dumps({"url": args.base.rstrip("/") + out["path"], **out}) + "\n")
    return 0
