"""``dropline token create --db PATH|URL --role read|admin``: a new API token, printed once.

Only its SHA-256 is stored (in the collector's SQLite file or PostgreSQL database), so it cannot be
shown again; requests carry it as ``Authorization: Bearer TOKEN``. stdout: ``{"token", "role"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protocols.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        metavar="PATH|URL",
        help="the collector's store: SQLite file or postgresql:// URL",
    )
    parser.add_argument(
        "--role", required=True, choices=("read", "admin"), help="read: GETs; admin: also links"
    )


def run(args: argparse.Namespace) -> int:
    from cloud.sqldb import is_postgres
    from cloud.tokens import Tokens

    if not is_postgres(args.db) and not Path(args.db).exists():
        raise UsageError(f"--db {args.db}: no such store (start the collector on it first)")
    try:
        token = Tokens(args.db).create(args.role)
    except Exception as exc:  # not a database, locked, server unreachable
        raise UsageError(f"--db {args.db}: {exc}") from exc
    sys.stdout.write(json.dumps({"token": token, "role": args.role}) + "\n")
    return 0
