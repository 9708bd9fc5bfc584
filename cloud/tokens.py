"""API tokens and customer tracking links, kept hashed in the collector's SQLite file.

A token is 32 random bytes (``secrets.token_urlsafe``), shown once when created; only its
SHA-256 is stored, so a copy of the database gives nobody a working token. Tokens have a role:
``read`` (every GET of the API) or ``admin`` (also creating tracking links and webhooks).
A tracking link names one stop of one vehicle and expires; the link is its own credential.
Both live in tables of their own beside the store's (``api_tokens``, ``share_links``): in the
SQLite store's file, written through a connection of this module, or in the PostgreSQL store's
database (created by its migrations), so every collector sharing it knows every token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloud.sqldb import SqlDb

ROLES = ("read", "admin")
"""``admin`` may do everything ``read`` may."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    hash    TEXT PRIMARY KEY,     -- sha256 hex of the token
    role    TEXT NOT NULL,
    created INTEGER NOT NULL      -- unix seconds
);
CREATE TABLE IF NOT EXISTS share_links (
    hash     TEXT PRIMARY KEY,
    vehicle  TEXT NOT NULL,
    stop     TEXT NOT NULL,
    expires  INTEGER NOT NULL,    -- unix seconds
    created  INTEGER NOT NULL
);
"""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ShareLink:
    """What a tracking link opens: one stop of one vehicle, until ``expires`` (unix seconds)."""

    vehicle: str
    stop: str
    expires: float


class Tokens:
    """Creates and checks API tokens and tracking links. Thread-safe (a connection per call)."""

    def __init__(self, db: SqlDb | Path | str, clock: Callable[[], float] = time.time) -> None:
        """``db``: the store's database (a SQLite path or a ``postgresql://`` URL)."""
        self.db = db if isinstance(db, SqlDb) else SqlDb(db)
        self._clock = clock
        self.db.ensure(_SCHEMA)

    def create(self, role: str) -> str:
        """A new token of ``role`` (ValueError for another role); only its hash is kept."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        token = secrets.token_urlsafe(32)
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO api_tokens (hash, role, created) VALUES (?, ?, ?)",
                (_hash(token), role, int(self._clock())),
            )
        return token

    def role(self, token: str) -> str | None:
        """The role of a valid token, None for anything else."""
        with self.db.connect() as db:
            row = db.execute("SELECT role FROM api_tokens WHERE hash = ?", (_hash(token),)).fetchone()
        return None if row is None else str(row[0])

    def share(self, vehicle: str, stop: str, ttl_s: float) -> tuple[str, ShareLink]:
        """A new tracking link token for ``stop`` of ``vehicle``, valid ``ttl_s`` seconds."""
        if not ttl_s > 0:
            raise ValueError(f"ttl {ttl_s!r}: must be more than 0 seconds")
        token = secrets.token_urlsafe(24)
        now = self._clock()
        link = ShareLink(vehicle, stop, now + ttl_s)
        with self.db.connect() as db:
            db.execute(
                "INSERT INTO share_links (hash, vehicle, stop, expires, created) VALUES (?, ?, ?, ?, ?)",
                (_hash(token), vehicle, stop, int(link.expires), int(now)),
            )
        return token, link

    def shared(self, token: str) -> ShareLink | None:
        """The stop a link opens, None when the link is unknown or expired."""
        with self.db.connect() as db:
            row = db.execute(
                "SELECT vehicle, stop, expires FROM share_links WHERE hash = ?", (_hash(token),)
            ).fetchone()
        if row is None or row[2] <= self._clock():
            return None
        return ShareLink(str(row[0]), str(row[1]), float(row[2]))
