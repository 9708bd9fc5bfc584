"""Staged rollout (cloud/rollout.py) against a real collector store: simulated vans report
``document_status`` records through the ingest as an agent does, and the rollout's waves, abort
and completion are checked against hand-computed figures and the pushed-documents table read
with sqlite3 (what the gRPC streams would send down)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.documents import path_for as documents_path
from cloud.ingest import Ingest
from cloud.rollout import Rollouts, path_for
from cloud.store import SqliteStore
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb

VANS = [f"van-{i:02d}" for i in range(20)]
T0 = 1_700_000_000_000


class Fleet:
    """A collector store and the vans' next seqs; ``report`` sends one van's record up."""

    def __init__(self, db: Path) -> None:
        self.store = SqliteStore(db)
        self.ingest = Ingest(self.store)
        self.seq = dict.fromkeys(VANS, 0)

    def send(self, vehicle: str, record: pb.Record) -> None:
        self.seq[vehicle] += 1
        record.seq = self.seq[vehicle]
        ack = self.ingest.handle(
            wire.encode_batch(vehicle, self.seq[vehicle], [record.SerializeToString()]), vehicle
        )
        assert [(r.first, r.last) for r in ack.stored] == [(record.seq, record.seq)]

    def status(self, vehicle: str, applied: bool, version: int = 3, reason: str = "") -> None:
        body = pb.DocumentStatus(
            time_ms=T0, document="config", version=version, applied=applied, reason=reason
        )
        self.send(vehicle, pb.Record(document_status=body))

    def alive(self, vehicle: str) -> None:
        self.send(vehicle, pb.Record(fix=pb.Fix(time_ms=T0, mode=3, lat_e7=481_000_000, lon_e7=115_000_000)))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "collector.db")
    yield f
    f.store.close()


def by_hand(version: int = 3) -> list[str]:
    """The rollout order, computed here from the documented rule."""
    return sorted(VANS, key=lambda v: hashlib.sha256(f"config\0{version}\0{v}".encode()).digest())


def pushed(db: Path) -> list[str]:
    with sqlite3.connect(documents_path(db)) as conn:
        return [v for (v,) in conn.execute("SELECT vehicle FROM pushed ORDER BY id")]


def test_waves_widen_by_doubling_and_complete_when_all_applied(fleet: Fleet) -> None:
    clock = Clock()
    rollouts = Rollouts(fleet.store.path, clock)
    rid = rollouts.start("config", 3, b"ENVELOPE", VANS, fraction=0.1, abort_refusals=0.2)
    order = by_hand()
    assert pushed(fleet.store.path) == order[:2]  # ceil(0.1 * 20)
    assert rollouts.advance(rid)["counts"] == {"pending": 2, "not_pushed": 18}  # nobody answered yet
    sizes: list[int] = []
    for _ in range(10):
        for v in pushed(fleet.store.path)[sum(sizes) :]:
            fleet.status(v, applied=True)
        sizes.append(len(pushed(fleet.store.path)) - sum(sizes))
        status = rollouts.advance(rid)
        if status["state"] != "running":
            break
    assert sizes == [2, 2, 4, 8, 4]  # 2 -> 4 -> 8 -> 16 -> 20 pushed
    assert pushed(fleet.store.path) == order
    assert (status["state"], status["counts"], status["waves"]) == ("completed", {"applied": 20}, 5)
    rollouts.close()


def test_refusals_past_the_threshold_abort_and_nothing_more_is_pushed(fleet: Fleet) -> None:
    rollouts = Rollouts(fleet.store.path, Clock())
    rid = rollouts.start("config", 3, b"ENVELOPE", VANS, fraction=0.25, abort_refusals=0.2)
    first = pushed(fleet.store.path)
    assert len(first) == 5
    fleet.status(first[0], applied=True)
    fleet.status(first[1], applied=False, version=2, reason="other version: not this rollout")
    assert rollouts.advance(rid)["state"] == "running"  # 0 of 5 failed
    fleet.status(first[1], applied=False, reason="schema")  # 1 of 5 = 20%: not past 20%
    assert rollouts.advance(rid)["state"] == "running"
    fleet.status(first[2], applied=False, reason="version_not_newer")  # 2 of 5 = 40%
    status = rollouts.advance(rid)
    assert status["state"] == "aborted" and "2 of 5" in status["reason"]
    assert {t["vehicle"]: t["reason"] for t in status["targets"] if t["outcome"] == "refused"} == {
        first[1]: "schema",
        first[2]: "version_not_newer",
    }
    for v in first[3:]:
        fleet.status(v, applied=True)
    assert rollouts.advance(rid)["state"] == "aborted"  # for good
    assert pushed(fleet.store.path) == first
    rollouts.close()


def test_a_van_that_goes_silent_after_the_push_counts_as_failed(fleet: Fleet) -> None:
    clock = Clock()
    for v in VANS:
        fleet.alive(v)
    rollouts = Rollouts(fleet.store.path, clock)
    rid = rollouts.start("config", 3, b"E", VANS[:4], fraction=0.5, abort_refusals=0.4, silent_after_s=60)
    a, b = pushed(fleet.store.path)
    fleet.status(a, applied=True)
    clock.now += 59
    assert rollouts.advance(rid)["counts"] == {"applied": 1, "pending": 1, "not_pushed": 2}
    fleet.alive(b)  # still talking, no status yet: pending however long it takes
    clock.now += 600
    assert rollouts.advance(rid)["counts"] == {"applied": 1, "pending": 1, "not_pushed": 2}
    rid2 = rollouts.start("config", 4, b"E", [b], fraction=1, abort_refusals=0.4, silent_after_s=60)
    clock.now += 61
    status = rollouts.advance(rid2)
    assert status["state"] == "aborted" and status["targets"][0]["outcome"] == "silent"
    rollouts.close()


def dropline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropline_cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_starts_a_rollout_and_prints_its_status(fleet: Fleet, tmp_path: Path) -> None:
    envelope = tmp_path / "agent.toml.signed"
    signed = {"kind": "config", "version": 3}
    import base64

    envelope.write_text(json.dumps({"signed": base64.b64encode(json.dumps(signed).encode()).decode()}))
    db = str(fleet.store.path)
    out = dropline(
        "config",
        "rollout",
        str(envelope),
        "--db",
        db,
        "--fraction",
        "0.1",
        "--abort-refusals",
        "0.2",
        "--vehicles",
        *VANS,
    )
    assert out.returncode == 0, out.stderr
    assert pushed(fleet.store.path) == by_hand()[:2]
    for v in by_hand()[:2]:
        fleet.status(v, applied=True)
    out = dropline("config", "rollout-status", "--db", db, "--advance")
    assert out.returncode == 0, out.stderr
    [status] = [json.loads(line) for line in out.stdout.splitlines()]
    assert (status["state"], status["counts"]) == ("running", {"applied": 2, "pending": 2, "not_pushed": 16})
    assert path_for(fleet.store.path).exists()


def test_the_collector_advances_rollouts_on_a_timer_and_serves_them(tmp_path: Path) -> None:
    """A real collector in-process (SQLite store, HTTP on loopback, the timer every 50 ms): the
    first wave's vans apply, and without anyone running ``--advance`` the second wave (2 x 2 vans,
    by the documented order) is pushed and shown by GET /api/v1/rollouts."""
    import time
    import urllib.error
    import urllib.request

    from cloud.collector import Collector
    from cloud.tokens import Tokens

    db = tmp_path / "collector.db"
    fleet = Fleet(db)
    collector = Collector(db, ingest=fleet.ingest, http_addr="127.0.0.1:0", rollout_every_s=0.05)
    collector.start()
    try:
        base = f"http://127.0.0.1:{collector.http.bound_port}/api/v1/rollouts"
        token = Tokens(db).create("read")

        def get() -> list[dict[str, object]]:
            request = urllib.request.Request(base, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10) as r:
                return list(json.loads(r.read()))

        assert get() == []
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base, timeout=10)
        assert refused.value.code == 401
        rollouts = Rollouts(db)
        rid = rollouts.start("config", 3, b"{}", VANS, fraction=0.1, abort_refusals=0.5)
        rollouts.close()
        first = by_hand()[:2]  # ceil(0.1 * 20)
        assert pushed(db) == first
        for van in first:
            fleet.status(van, applied=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(pushed(db)) < 4:
            time.sleep(0.05)
        assert pushed(db) == by_hand()[:4]
        [shown] = get()
        assert (shown["id"], shown["state"], shown["waves"]) == (rid, "running", 2)
        assert shown["counts"] == {"applied": 2, "pending": 2, "not_pushed": 16}
        assert "envelope" not in shown
    finally:
        collector.stop()
        fleet.store.close()
    assert collector.rollout_passes > 0
