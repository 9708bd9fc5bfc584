"""Webhooks for integrators: signed, retried, at least once, from a durable queue.

Events: ``delivered`` (a proof of delivery), ``eta.changed`` (a stop's ETA moved by more than
``eta_margin_s`` since the last one notified), ``exception.raised`` (an alert of severity
warning or worse) and ``exception.cleared`` (``<code>_cleared``, ``gps_restored``).

The ingest's listener turns stored records into notifications and commits them to a queue (a
SQLite file of its own, or the PostgreSQL store's database) before the batch is acknowledged, one
row per (subscription, idempotency key): a batch sent again adds nothing, and a collector restart
loses nothing. Collectors sharing a PostgreSQL share the queue: a sender claims due rows (moves
their ``next_at`` past a lease) before posting them, so two senders do not post one row together.
A sender thread POSTs due rows as JSON with

* ``Idempotency-Key``: ``<vehicle>:<seq>:<event>[:<stop>]``, the same on every retry (receivers
  dedupe on it: delivery is at least once);
* ``Dropline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``: receivers
  recompute it and refuse a ``t`` older than a few minutes, so a captured request cannot be
  replayed later (Stripe's scheme).

A 2xx answer settles a row; anything else (an error status, a refused connection, no answer
within ``timeout_s``) retries it after ``min(backoff_max_s, backoff_s * 2**attempts)`` with
+-20 % jitter, for ever, oldest first per subscription (per sender: two collectors may
interleave; receivers order by the record's time, not by arrival).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloud.sqldb import Conn, SqlDb
from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb

log = logging.getLogger("dropline.webhooks")

EXCEPTION_SEVERITIES = frozenset({"warning", "error", "critical"})

SUFFIX = ".webhooks"
"""The queue's SQLite file beside a SQLite store (``<db>.webhooks``)."""

CLAIM_ROWS = 20
"""Due rows one sender claims at a time."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id      INTEGER PRIMARY KEY,
    url     TEXT NOT NULL,
    secret  TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    id           INTEGER PRIMARY KEY,
    subscription INTEGER NOT NULL,
    key          TEXT NOT NULL,       -- the Idempotency-Key
    event        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    delivered_at REAL,
    last_error   TEXT,
    UNIQUE (subscription, key)
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (next_at) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS eta_sent ( -- the last ETA notified per stop, for the margin
    vehicle TEXT NOT NULL,
    stop    TEXT NOT NULL,
    eta_ms  INTEGER NOT NULL,
    PRIMARY KEY (vehicle, stop)
);
"""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Dropline-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def notifications(
    vehicle: str, records: list[pb.Record], last_eta: Callable[[str], int | None], margin_s: float
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(idempotency key, event, payload) for the records that make one; ``last_eta(stop)`` is the
    ETA last notified for a stop (ms), None if none."""
    for r in records:
        kind = r.WhichOneof("body")
        base = {"vehicle": vehicle, "record": convert.to_json(r)}
        if kind == "delivery":
            yield f"{vehicle}:{r.seq}:delivered", "delivered", base
        elif kind == "alert":
            code = r.alert.code
            if code.endswith("_cleared") or code == "gps_restored":
                yield f"{vehicle}:{r.seq}:exception.cleared", "exception.cleared", base
            elif r.alert.severity in EXCEPTION_SEVERITIES:
                yield f"{vehicle}:{r.seq}:exception.raised", "exception.raised", base
        elif kind == "eta":
            for stop, eta_ms in zip(r.eta.stops, r.eta.eta_ms, strict=False):
                before = last_eta(stop)
                if before is None or abs(eta_ms - before) > margin_s * 1000:
                    payload = {**base, "stop": stop, "eta_ms": eta_ms, "previous_eta_ms": before}
                    yield f"{vehicle}:{r.seq}:eta.changed:{stop}", "eta.changed", payload


class Webhooks:
    """The queue, its producer (``on_stored``, an ingest listener) and its sender thread."""

    def __init__(
        self,
        db: SqlDb | Path | str,
        *,
        eta_margin_s: float = 300.0,
        timeout_s: float = 5.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db if isinstance(db, SqlDb) else SqlDb(db)
        self.eta_margin_s = eta_margin_s
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.db.ensure(_SCHEMA)

    def subscribe(self, url: str, secret: str) -> int:
        """Add a receiver; ValueError for a URL that is not http(s) or an empty secret."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {url!r}: an http:// or https:// URL is required")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ValueError("secret: at least 16 characters")
        with self.db.connect() as db:
            row = db.execute(
                "INSERT INTO subscriptions (url, secret, created) VALUES (?, ?, ?) RETURNING id",
                (url, secret, int(self._clock())),
            ).fetchone()
        return int(row[0])

    # -- producing ------------------------------------------------------------------------------

    def on_stored(self, vehicle: str, records: list[pb.Record]) -> None:
        """The ingest listener: queue what these records notify, durably, before the ack."""
        if not any(r.WhichOneof("body") in ("delivery", "alert", "eta") for r in records):
            return
        queued = 0
        with self._lock, self.db.connect() as db:
            subs = [row[0] for row in db.execute("SELECT id FROM subscriptions")]
            if not subs:
                return
            with db.transaction():
                db.lock(f"webhooks:{vehicle}")  # another collector's ETA margin check waits
                now = self._clock()

                def last_eta(stop: str) -> int | None:
                    row = db.execute(
                        "SELECT eta_ms FROM eta_sent WHERE vehicle = ? AND stop = ?", (vehicle, stop)
                    ).fetchone()
                    return None if row is None else int(row[0])

                for key, event, payload in notifications(vehicle, records, last_eta, self.eta_margin_s):
                    body = json.dumps({"id": key, "event": event, **payload}, separators=(",", ":"))
                    for sub in subs:
                        cur = db.execute(
                            "INSERT INTO queue (subscription, key, event, payload, next_at)"
                            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            (sub, key, event, body, now),
                        )
                        queued += cur.rowcount
                    if event == "eta.changed":
                        db.execute(
                            "INSERT INTO eta_sent (vehicle, stop, eta_ms) VALUES (?, ?, ?) ON CONFLICT"
                            " (vehicle, stop) DO UPDATE SET eta_ms = excluded.eta_ms",
                            (vehicle, payload["stop"], payload["eta_ms"]),
                        )
        if queued:
            self._wake.set()

    # -- sending --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
            self._thread = None

    def pending(self) -> int:
        with self.db.connect() as db:
            return int(db.execute("SELECT count(*) FROM queue WHERE delivered_at IS NULL").fetchone()[0])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.send_due()
            except Exception:  # a bug here must not end the sender: log, back off, go on
                log.exception("webhooks: sending failed")
                wait = self.backoff_s
            self._wake.wait(wait)
            self._wake.clear()

    def send_due(self) -> float:
        """Send every due row once; the seconds until the next one is due (at most 5 s)."""
        failed: set[str] = set()  # receivers that failed in this round
        with self.db.connect() as db:
            for row_id, key, event, payload, attempts, url, secret in self._claim(db):
                if self._stop.is_set():  # stopping: what is claimed and unsent is due again at once
                    db.execute("UPDATE queue SET next_at = ? WHERE id = ?", (self._clock(), row_id))
                    continue
                self._send(db, failed, row_id, key, event, payload, attempts, url, secret)
            row = db.execute("SELECT min(next_at) FROM queue WHERE delivered_at IS NULL").fetchone()
        if row[0] is None:
            return 5.0
        return max(0.0, min(5.0, float(row[0]) - self._clock()))

    def _claim(self, db: Conn) -> list[tuple[Any, ...]]:
        """Take up to :data:`CLAIM_ROWS` due rows, oldest first, for this sender alone: their
        ``next_at`` moves past the time posting them may take, so another sender (another
        collector on the same database) skips them; a sender killed meanwhile leaves them due
        again when that lease ends. The UPDATE re-checks ``next_at`` on each row it locks, so of
        two senders claiming at once only one gets a row."""
        now = self._clock()
        lease = now + CLAIM_ROWS * (self.timeout_s + 1)
        claimed = db.execute(
            "UPDATE queue SET next_at = ? WHERE delivered_at IS NULL AND next_at <= ? AND id IN"
            " (SELECT id FROM queue WHERE delivered_at IS NULL AND next_at <= ? ORDER BY id LIMIT ?)"
            " RETURNING id",
            (lease, now, now, CLAIM_ROWS),
        ).fetchall()
        if not claimed:
            return []
        ids = sorted(int(r[0]) for r in claimed)
        rows = db.execute(
            "SELECT q.id, q.key, q.event, q.payload, q.attempts, s.url, s.secret FROM queue q"
            " JOIN subscriptions s ON s.id = q.subscription"
            f" WHERE q.id IN ({','.join('?' * len(ids))}) ORDER BY q.id",
            ids,
        ).fetchall()
        return [tuple(r) for r in rows]

    def _send(
        self,
        db: Conn,
        failed: set[str],
        row_id: int,
        key: str,
        event: str,
        payload: str,
        attempts: int,
        url: str,
        secret: str,
    ) -> None:
        """Post one claimed row and settle it: delivered, or due again after the backoff."""
        if url in failed:  # keep the order per receiver: no overtaking a failed row
            error: str | None = "an earlier notification is waiting"
        else:
            error = self._post(url, secret, key, event, payload.encode())
        now = self._clock()
        if error is None:
            db.execute("UPDATE queue SET delivered_at = ?, last_error = NULL WHERE id = ?", (now, row_id))
            return
        failed.add(url)
        delay = min(self.backoff_max_s, self.backoff_s * 2**attempts) * random.uniform(0.8, 1.2)
        db.execute(
            "UPDATE queue SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
            (now + delay, error, row_id),
        )
        log.info("webhook %s to %s failed (attempt %d): %s", key, url, attempts + 1, error)

    def _post(self, url: str, secret: str, key: str, event: str, body: bytes) -> str | None:
        """None if the receiver answered 2xx, else what went wrong."""
        timestamp = int(self._clock())
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                "Dropline-Event": event,
                "Dropline-Signature": sign(secret, timestamp, body),
                "User-Agent": "dropline-webhooks/1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # refused, reset, timed out (a hanging receiver)
            return f"{type(exc).__name__}: {exc}"
