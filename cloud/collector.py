"""The collector process: one store, one ingest, and whichever transports are configured.

``Collector`` is a context manager so tests can run one in-process; ``dropline collector`` runs
one until SIGTERM or SIGINT and then stops it cleanly (batches in hand are finished and acked).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from cloud.grpc_server import serve_grpc
from cloud.ingest import Budget, Ingest
from cloud.mqtt_ingest import MqttIngest
from cloud.sqldb import SqlDb
from cloud.store import SqliteStore, Store
from protocols.mqtt_url import parse_mqtt_url
from protocols.tls import TlsFiles

log = logging.getLogger("dropline.collector")

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""A ``--db`` starting with one of these is a PostgreSQL connection URL (libpq's form)."""

DEFAULT_BUDGET = Budget()
"""Each sender's refused or quarantined batches: 20 a second, 100 at once (``cloud.ingest``)."""


def open_store(db: str | Path, *, readonly: bool = False) -> Store:
    """The store a ``--db`` value names: a ``postgresql://`` (or ``postgres://``) URL, a database
    several collectors can share across machines, or else a SQLite file path. ``readonly`` opens
    an existing store to read (``vehicles``, ``export``) and writes nothing."""
    if str(db).startswith(POSTGRES_SCHEMES):
        from cloud.store_postgres import PostgresStore  # psycopg only where PostgreSQL is used

        return PostgresStore(str(db), readonly=readonly)
    return SqliteStore(db, readonly=readonly)


class Collector:
    """Store + ingest + optional gRPC server + optional MQTT client, started and stopped together."""

    def __init__(
        self,
        db: str | Path,
        *,
        grpc_addr: str | None = None,
        mqtt_url: str | None = None,
        client_id: str | None = None,
        ingest: Ingest | None = None,
        tls: TlsFiles | None = None,
        http_addr: str | None = None,
        manifests: Path | None = None,
        budget: Budget | None = DEFAULT_BUDGET,
        rollout_every_s: float | None = None,
    ) -> None:
        """``budget``: each sender's refused or quarantined batches (``cloud.ingest.Budget``; for a
        given ``ingest``, its own); ``rollout_every_s``: advance running rollouts this often (a
        SQLite store's ``<db>.rollouts``; None: only ``config rollout-status --advance`` does)."""
        self.tls = tls  # mutual TLS on both transports; None = plaintext (local tests)
        self.mqtt_target = parse_mqtt_url(mqtt_url) if mqtt_url else None
        self.store = ingest.store if ingest is not None else open_store(db)
        self.ingest = ingest or Ingest(self.store, budget=budget)
        self.grpc_addr = grpc_addr
        self.client_id = client_id
        self.grpc_server: Any = None
        self.mqtt: MqttIngest | None = None
        self.http_addr = http_addr
        self.manifests = manifests
        self.http: Any = None
        self.webhooks: Any = None
        self.feed: Any = None
        self.databases: list[SqlDb] = []  # the tower's and documents' connections, closed on stop
        self.rollout_every_s = rollout_every_s
        self.rollout_passes = 0
        """Rounds of :meth:`advance_rollouts` the timer has run (tests wait on it)."""
        self._stop_timer = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self) -> None:
        if self.grpc_addr:
            from cloud.documents import SUFFIX, PushedDocuments

            sql = SqlDb.for_store(self.store)
            docs = PushedDocuments(sql.beside(SUFFIX)) if sql is not None else None
            self.databases += [docs.db] if docs is not None else []
            self.grpc_server = serve_grpc(self.ingest, self.grpc_addr, tls=self.tls, documents=docs)
        if self.mqtt_target is not None:
            self.mqtt = MqttIngest(self.ingest, self.mqtt_target, client_id=self.client_id, tls=self.tls)
            self.mqtt.start()
        if self.http_addr:
            self._start_http(self.http_addr)
        if self.rollout_every_s is not None:
            if not isinstance(self.store, SqliteStore):
                log.warning("collector: rollouts live beside a SQLite store; not advancing them here")
            else:
                self._stop_timer.clear()
                self._timer = threading.Thread(target=self._advance_every, name="rollouts", daemon=True)
                self._timer.start()

    def _advance_every(self) -> None:
        """Every ``rollout_every_s``: each running rollout takes in its vans' reports and widens,
        aborts or completes (``cloud.rollout``), as ``config rollout-status --advance`` does. Its
        own connection (SQLite connections stay on their thread); a failure is logged and retried."""

        assert isinstance(self.store, SqliteStore) and self.rollout_every_s is not None
        while not self._stop_timer.wait(self.rollout_every_s):
            try:
                advance_rollouts(self.store.path)
            except Exception:  # a locked or damaged rollouts file must not end the timer
                log.exception(
                    "collector: advancing rollouts failed; trying again in %g s", self.rollout_every_s
                )
            self.rollout_passes += 1

    def _start_http(self, addr: str) -> None:
        """The control tower (API, pages, live stream) and the webhook sender. Webhooks are fed by
        this collector's ingest; the live stream by the store (``cloud.feed``), so it shows what
        every collector sharing a PostgreSQL stored. Imported here: a collector without
        ``--http`` never loads Starlette or uvicorn."""
        from cloud.api.app import HttpServer, create_app, parse_addr
        from cloud.api.stream import Hub
        from cloud.feed import Feed, FeedThread
        from cloud.tokens import Tokens
        from cloud.webhooks import SUFFIX, Webhooks

        sql = SqlDb.for_store(self.store)
        if sql is None:
            raise ValueError("--http needs a SQLite or PostgreSQL store")
        hub = Hub()
        self.webhooks = Webhooks(sql.beside(SUFFIX))
        self.ingest.listeners.append(self.webhooks.on_stored)
        self.webhooks.start()
        self.feed = FeedThread(Feed(sql), hub.publish)
        self.feed.start()
        reader = sql if sql.postgres else SqlDb(sql.path, readonly=True)
        self.databases += [sql, self.webhooks.db, reader]
        app = create_app(
            reader, self.store, Tokens(sql), hub, manifests=self.manifests, webhooks=self.webhooks
        )
        host, port = parse_addr(addr)
        self.http = HttpServer(app, host, port)
        self.http.start()
        log.info("control tower on http://%s:%d/", host, self.http.bound_port)

    def stop(self, grace_s: float = 5.0) -> None:
        if self._timer is not None:
            self._stop_timer.set()
            self._timer.join(30)
            self._timer = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.grpc_server is not None:
            self.grpc_server.stop(grace_s).wait()
            self.grpc_server = None
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        if self.webhooks is not None:
            self.webhooks.stop()
            self.webhooks = None
        if self.feed is not None:
            self.feed.stop()
            self.feed = None
        for db in self.databases:
            db.close()
        self.databases = []
        if self.ingest.blobs is not None:
            self.ingest.blobs.close()
        self.store.close()
        log.info("collector stopped: %s", self.ingest.stats())

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def advance_rollouts(db: Path) -> list[dict[str, Any]]:
    """Advance every running rollout of the SQLite store ``db``; the statuses that changed state
    (logged). Nothing to do, and no file created, while it has no rollouts."""
    from cloud.rollout import Rollouts, path_for

    if not path_for(db).exists():
        return []
    rollouts = Rollouts(db)
    changed = []
    try:
        for status in rollouts.all():
            if status["state"] == "running":
                after = rollouts.advance(status["id"])
                if (after["state"], after["waves"]) != (status["state"], status["waves"]):
                    log.info(
                        "rollout %d (%s v%d): %s, wave %d %s",
                        after["id"],
                        after["kind"],
                        after["version"],
                        after["state"],
                        after["waves"],
                        after["counts"],
                    )
                    changed.append(after)
    finally:
        rollouts.close()
    return changed


def run_until_signalled(collector: Collector, on_started: Callable[[], None] | None = None) -> None:
    """Start, wait for SIGTERM or SIGINT, stop. Call from the main thread."""
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("collector: %s received, stopping", signal.Signals(signum).name)
        done.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        collector.start()
        if on_started is not None:
            on_started()
        while not done.wait(1.0):
            pass
    finally:
        collector.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
