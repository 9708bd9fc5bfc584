"""Webhooks against a real HTTP receiver on loopback that fails, hangs and comes back, with a
restart of the sender in between: every notification arrives (at least once), signed. The queue
in a SQLite file and in a real PostgreSQL; and two senders (two collectors) sharing a PostgreSQL
queue post each notification once."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.sqldb import SqlDb
from cloud.webhooks import Webhooks
from protocols import convert
from protocols.records import Alert, Delivery, Eta, Fix
from tests.postgres import Postgres, run_postgres

SECRET = "s3cret-s3cret-s3cret"
T0 = 1_410_325_200.0


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "fail"  # fail | hang | ok
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.release = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.attempts += 1
        if self.server.mode == "hang":
            self.server.release.wait(10)  # longer than the sender's timeout
            return
        if self.server.mode == "fail":
            self.send_response(503)
            self.end_headers()
            return
        self.server.got.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SqlDb:
    if request.param == "sqlite":
        return tmp_path / "collector.db.webhooks"
    server: Postgres = request.getfixturevalue("postgres")
    return SqlDb(server.new_store_url("hooks"))


def test_fails_hangs_restart_and_comes_back(queue: Path | SqlDb) -> None:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    opts: dict[str, Any] = {"timeout_s": 0.5, "backoff_s": 0.05, "backoff_max_s": 0.3, "eta_margin_s": 120}
    hooks = Webhooks(queue, **opts)
    hooks.subscribe(url, SECRET)
    records = [
        convert.to_pb(1, Fix(T0, 3, 48.1, 11.5)),  # no event
        convert.to_pb(2, Alert(T0 + 1, "restricted_zone", "warning", "in", {"fence": "z"})),
        convert.to_pb(3, Eta(T0 + 2, "m1", ("S1", "S2"), (T0 + 600, T0 + 900))),
        convert.to_pb(4, Eta(T0 + 3, "m1", ("S1", "S2"), (T0 + 660, T0 + 1100))),  # S1 +60 s: within margin
        convert.to_pb(5, Delivery(T0 + 4, "m1", "S1", "P1", "raw")),
        convert.to_pb(6, Alert(T0 + 5, "restricted_zone_cleared", "info", "out", {"fence": "z"})),
        convert.to_pb(7, Alert(T0 + 6, "document_received", "info", "not an exception")),
    ]
    hooks.on_stored("van-1", records)
    hooks.on_stored("van-1", records)  # the same batch again (a resend): nothing new queued
    expected = {
        "van-1:2:exception.raised",
        "van-1:3:eta.changed:S1",
        "van-1:3:eta.changed:S2",
        "van-1:4:eta.changed:S2",
        "van-1:5:delivered",
        "van-1:6:exception.cleared",
    }
    assert hooks.pending() == len(expected)
    hooks.start()
    wait_for(lambda: receiver.attempts >= 3, "retries while the receiver fails")
    receiver.mode = "hang"
    seen = receiver.attempts
    wait_for(lambda: receiver.attempts > seen, "an attempt at the hanging receiver")
    hooks.stop()  # the collector restarts with the receiver still hanging
    receiver.release.set()
    assert receiver.got == [] and Webhooks(queue, **opts).pending() == len(expected)

    receiver.mode = "ok"
    again = Webhooks(queue, **opts)
    again.start()
    try:
        wait_for(lambda: again.pending() == 0, "every notification delivered after the restart")
    finally:
        again.stop()
    keys = [h["Idempotency-Key"] for h, _ in receiver.got]
    assert set(keys) == expected
    for headers, body in receiver.got:
        t, v1 = (part.split("=", 1)[1] for part in headers["Dropline-Signature"].split(","))
        mine = hmac.new(SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mine, v1)
        assert abs(int(t) - time.time()) < 60
        payload = json.loads(body)
        assert payload["id"] == headers["Idempotency-Key"] and payload["event"] == headers["Dropline-Event"]
    delivered = next(json.loads(b) for h, b in receiver.got if h["Dropline-Event"] == "delivered")
    assert delivered["record"]["parcel"] == "P1" and delivered["vehicle"] == "van-1"
    receiver.shutdown()


def test_two_collectors_sharing_a_postgres_queue_post_each_once(postgres: Postgres) -> None:
    receiver = Receiver()
    receiver.mode = "ok"
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    db = postgres.new_store_url("shared")
    opts: dict[str, Any] = {"timeout_s": 2.0, "backoff_s": 0.05, "backoff_max_s": 0.3}
    first, second = Webhooks(SqlDb(db), **opts), Webhooks(SqlDb(db), **opts)
    first.subscribe(url, SECRET)
    alerts = [convert.to_pb(seq, Alert(T0 + seq, "late", "warning", f"stop {seq}")) for seq in range(1, 201)]
    first.on_stored("van-1", alerts[:120])  # each collector stored part of the stream, with overlap
    second.on_stored("van-1", alerts[80:])
    assert first.pending() == 200
    first.start()
    second.start()
    try:
        wait_for(lambda: first.pending() == 0, "every notification delivered")
    finally:
        first.stop()
        second.stop()
    keys = sorted(h["Idempotency-Key"] for h, _ in receiver.got)
    assert keys == sorted(f"van-1:{seq}:exception.raised" for seq in range(1, 201))  # each once
