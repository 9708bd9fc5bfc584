"""The database the control tower's own tables live in, chosen by the collector's ``--db``: a
SQLite file, or the PostgreSQL database the records are in.

Tokens, tracking links, the webhook queue, the reassembled blobs and the pushed documents each
write their few statements once, in the SQL both engines accept (``?`` placeholders, rewritten
to psycopg's ``%s``; ``INSERT ... ON CONFLICT``; ``RETURNING``), through this interface:

* :meth:`SqlDb.connect` hands out a :class:`Conn` (autocommit: every statement commits alone)
  whose :meth:`Conn.transaction` groups statements, writing at once (SQLite ``BEGIN IMMEDIATE``;
  PostgreSQL with :meth:`Conn.lock` for what two collectors may write together).
* :meth:`SqlDb.beside` names where a module's tables go: with SQLite a file of their own next to
  the store (``<db>.webhooks``, ``<db>.blobs``, ...), so they never contend with the record
  writes; with PostgreSQL the same database, so every collector sharing it sees them.

PostgreSQL tables are created by :data:`TOWER_MIGRATIONS` (tracked in ``tower_schema_version``,
beside the store's own ``schema_version``), applied when a module first opens a URL, so a
database only ever used for records holds nothing of the control tower; SQLite tables by each
module's ``CREATE TABLE IF NOT EXISTS`` schema (:meth:`SqlDb.ensure`).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""A ``--db`` starting with one of these is a PostgreSQL connection URL (libpq's form)."""

TOWER_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE api_tokens (hash text PRIMARY KEY, role text NOT NULL, created bigint NOT NULL);
    CREATE TABLE share_links (
        hash text PRIMARY KEY, vehicle text NOT NULL, stop text NOT NULL,
        expires bigint NOT NULL, created bigint NOT NULL
    );
    CREATE TABLE subscriptions (
        id bigserial PRIMARY KEY, url text NOT NULL, secret text NOT NULL, created bigint NOT NULL
    );
    CREATE TABLE queue (
        id           bigserial PRIMARY KEY,
        subscription bigint NOT NULL,
        key          text NOT NULL,
        event        text NOT NULL,
        payload      text NOT NULL,
        attempts     integer NOT NULL DEFAULT 0,
        next_at      double precision NOT NULL,
        delivered_at double precision,
        last_error   text,
        UNIQUE (subscription, key)
    );
    CREATE INDEX queue_due ON queue (next_at) WHERE delivered_at IS NULL;
    CREATE TABLE eta_sent (
        vehicle text NOT NULL, stop text NOT NULL, eta_ms bigint NOT NULL, PRIMARY KEY (vehicle, stop)
    );
    CREATE TABLE blobs (
        vehicle text NOT NULL, blob text NOT NULL, media_type text NOT NULL, delivery text NOT NULL,
        sha256 text NOT NULL, count integer NOT NULL, time_ms bigint NOT NULL, size bigint,
        complete integer NOT NULL DEFAULT 0, reason text NOT NULL DEFAULT '', data bytea,
        PRIMARY KEY (vehicle, blob)
    );
    CREATE TABLE blob_parts (
        vehicle text NOT NULL, blob text NOT NULL, idx integer NOT NULL, data bytea NOT NULL,
        PRIMARY KEY (vehicle, blob, idx)
    );
    CREATE TABLE pushed (
        id bigserial PRIMARY KEY, vehicle text NOT NULL, kind text NOT NULL,
        envelope bytea NOT NULL, pushed_at double precision NOT NULL
    );
    CREATE INDEX pushed_vehicle ON pushed (vehicle, kind, id);
    """,
)
"""The control tower's PostgreSQL tables (cloud/tokens.py, webhooks.py, blobs.py, documents.py),
the same as their SQLite files'. Append new ones; never edit one that has shipped."""

_TOWER_LOCK = 0x746F776572  # 'tower': one collector migrates at a time

IDLE_CONNECTIONS = 8
"""PostgreSQL connections kept open for reuse per database (each request would pay a connect)."""


def is_postgres(target: str | Path) -> bool:
    return str(target).startswith(POSTGRES_SCHEMES)


class Cursor(Protocol):
    """What both drivers' cursors give back."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn:
    """One connection of either engine, autocommit unless inside :meth:`transaction`."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self.raw = raw
        self.postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement written with ``?`` placeholders."""
        if self.postgres:
            cursor: Cursor = self.raw.execute(sql.replace("?", "%s").encode(), tuple(params))
        else:
            cursor = self.raw.execute(sql, tuple(params))
        return cursor

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """Commit the block's statements together, or none of them if it raises."""
        if self.postgres:
            with self.raw.transaction():
                yield self
            return
        self.raw.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock later
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def lock(self, key: str) -> None:
        """Serialise the rest of this transaction with every other one locking ``key``, in any
        collector (PostgreSQL advisory lock; SQLite's write lock already does it)."""
        if self.postgres:
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(key.encode()) | 0x5444 << 32,))


class SqlDb:
    """A SQLite file or a PostgreSQL URL. Thread-safe: each :meth:`connect` is its own connection."""

    def __init__(self, target: str | Path, *, readonly: bool = False) -> None:
        """``readonly`` (SQLite): open an existing file only, never create one."""
        self.postgres = is_postgres(target)
        self.target = str(target)
        self.readonly = readonly
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(IDLE_CONNECTIONS)
        self._migrated = threading.Event()

    @classmethod
    def for_store(cls, store: object) -> SqlDb | None:
        """The database of a collector store (SQLite ``path`` or PostgreSQL ``url``), None for a
        store that is neither."""
        url = getattr(store, "url", None)
        if isinstance(url, str) and is_postgres(url):
            return cls(url)
        path = getattr(store, "path", None)
        return cls(path) if isinstance(path, Path) else None

    def beside(self, suffix: str) -> SqlDb:
        """Where a module's tables go: SQLite ``<file><suffix>``; PostgreSQL this same database."""
        if self.postgres:
            return self
        return SqlDb(self.target + suffix, readonly=self.readonly)

    @property
    def path(self) -> Path:
        """The SQLite file (ValueError for PostgreSQL)."""
        if self.postgres:
            raise ValueError("a PostgreSQL database has no file")
        return Path(self.target)

    def exists(self) -> bool:
        """Whether there is anything to read yet (a SQLite file may not have been created)."""
        return self.postgres or Path(self.target).exists()

    def ensure(self, sqlite_schema: str) -> None:
        """Create the tables: SQLite runs ``sqlite_schema``; PostgreSQL applies the missing
        :data:`TOWER_MIGRATIONS` (once per :class:`SqlDb`; safe with collectors starting together)."""
        if self.postgres:
            if not self._migrated.is_set():
                with self.connect() as db:
                    _migrate_tower(db)
                self._migrated.set()
            return
        with self.connect() as db:
            db.raw.execute("PRAGMA journal_mode=WAL")
            db.raw.executescript(sqlite_schema)

    @contextmanager
    def connect(self) -> Iterator[Conn]:
        """A connection for the block (PostgreSQL: reused from a small idle pool)."""
        if self.postgres:
            raw = self._pg()
            try:
                yield Conn(raw, True)
            finally:
                self._give_back(raw)
            return
        if self.readonly:
            raw = sqlite3.connect(f"file:{self.target}?mode=ro", uri=True, isolation_level=None, timeout=30)
        else:
            raw = sqlite3.connect(self.target, isolation_level=None, timeout=30, check_same_thread=False)
            raw.execute("PRAGMA synchronous=FULL")  # what is committed survives a power cut
        try:
            yield Conn(raw, False)
        finally:
            raw.close()

    def _pg(self) -> Any:
        import psycopg  # only where PostgreSQL is used

        try:
            raw = self._idle.get_nowait()
        except queue.Empty:
            return psycopg.connect(
                self.target, autocommit=True, connect_timeout=10, application_name="dropline"
            )
        return raw

    def _give_back(self, raw: Any) -> None:
        import psycopg

        if raw.closed or raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raw.close()
            return
        try:
            self._idle.put_nowait(raw)
        except queue.Full:
            raw.close()

    def close(self) -> None:
        """Close the idle connections (connections in use close when given back)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _migrate_tower(db: Conn) -> None:
    """Apply the :data:`TOWER_MIGRATIONS` the database lacks, under a session advisory lock;
    RuntimeError for a database migrated by a newer build."""
    db.execute("SELECT pg_advisory_lock(?)", (_TOWER_LOCK,))
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS tower_schema_version"
            " (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        (current,) = db.execute("SELECT coalesce(max(version), 0) FROM tower_schema_version").fetchone()
        if current > len(TOWER_MIGRATIONS):
            raise RuntimeError(f"control tower schema {current} is newer than this build knows")
        for version in range(int(current) + 1, len(TOWER_MIGRATIONS) + 1):
            with db.transaction():
                db.raw.execute(TOWER_MIGRATIONS[version - 1].encode())
                db.execute("INSERT INTO tower_schema_version (version) VALUES (?)", (version,))
    finally:
        db.execute("SELECT pg_advisory_unlock(?)", (_TOWER_LOCK,))
