"""Acceptance of fleet documents on the van: the stage's checks on event time, the store's atomic
writes on a real directory, and a restart that cannot be tricked into a replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.documents import APPLY, DocumentStore, load_trust
from agent.effects import EffectRunner
from agent.events import Document, EffectResult
from agent.stages.base import VehicleState
from agent.stages.documents import SIGNED, DocumentStage
from protocols import envelope
from protocols.records import DocumentStatus, parse_iso_time

ROUTE_MANIFEST = Path(__file__).parent / "cases" / "route-day" / "manifest.json"
FLEET_KEY, NEXT_KEY, STRANGER = (Ed25519PrivateKey.generate() for _ in range(3))
NOW = parse_iso_time("2026-06-01T08:00:00Z")
EXPIRES = parse_iso_time("2026-07-01T00:00:00Z")


def config_body(vehicle: str = "van-7") -> bytes:
    return f'[vehicle]\nid = "{vehicle}"\n[uplink]\ntransport = "none"\n'.encode()


def signed(
    version: int, *, vehicle: str | None = "van-7", key: Ed25519PrivateKey = FLEET_KEY, **kw: object
) -> bytes:
    args: dict[str, object] = {"kind": "config", "version": version, "expires": EXPIRES, "vehicle": vehicle}
    args.update(kw)
    fleet_wide = b'[uplink]\ntransport = "none"\n'
    body = kw.pop("body", None) or (config_body(vehicle) if vehicle else fleet_wide)
    args.pop("body", None)
    return envelope.sign(body, [key], **args)  # type: ignore[arg-type, arg-type]


class Van:
    """A document stage and its store as the shell wires them, effects run by the real runner."""

    def __init__(self, directory: Path, pem: Path) -> None:
        self.store = DocumentStore(directory)
        self.stage = DocumentStage(load_trust(pem, 1), "van-7", "north", self.store.highest())
        self.state = VehicleState()

    def receive(self, data: bytes, at: float = NOW, kind: str = "config") -> DocumentStatus:
        out = self.stage.handle(Document(at, SIGNED + kind, data), self.state)
        if out.records:
            (status,) = out.records
            assert isinstance(status, DocumentStatus) and not out.effects
            return status
        results: list[EffectResult] = []
        runner = EffectRunner({APPLY: self.store.handle_effect}, results.append)
        runner.start()
        for effect in out.effects:
            runner.submit(effect)
        runner.stop()
        (result,) = results
        (status,) = self.stage.handle(EffectResult(at, result.effect, result.result), self.state).records
        assert isinstance(status, DocumentStatus)
        return status


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.pub"
    path.write_bytes(envelope.public_pem(FLEET_KEY.public_key()) + envelope.public_pem(NEXT_KEY.public_key()))
    return path


def test_applied_written_and_version_persisted(tmp_path: Path, pem: Path) -> None:
    van = Van(tmp_path / "docs", pem)
    data = signed(3)
    status = van.receive(data)
    assert (status.applied, status.document, status.version, status.reason) == (True, "config", 3, "")
    assert (tmp_path / "docs" / "config.envelope").read_bytes() == data
    assert json.loads((tmp_path / "docs" / "versions.json").read_text())["config"] == 3
    # the next key of a rotation is as good
    assert van.receive(signed(4, key=NEXT_KEY)).applied


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: signed(5)[:100] + bytes([signed(5)[100] ^ 1]) + signed(5)[101:], "bad_signature"),
        (lambda: signed(1), "old_version"),
        (lambda: signed(2), "old_version"),
        (lambda: signed(5, expires=NOW), "expired"),
        (lambda: signed(5, vehicle="van-8"), "wrong_vehicle"),
        (lambda: signed(5, vehicle=None, fleet="south"), "wrong_vehicle"),
        (lambda: signed(5, key=STRANGER), "unknown_key"),
        (lambda: signed(5, body=b'[vehicle]\nid = "van-8"\n'), "schema"),
        (lambda: signed(5, body=b"not toml ["), "schema"),
        (lambda: signed(5, body=b'[vehicle]\nid = "van-7"\n[uplink]\nwindow = 0\n'), "schema"),
        (lambda: signed(5, kind="manifest", body=b"[1, 2]"), "kind"),  # sent as config
    ],
)
def test_refused_with_reason_and_old_document_kept(
    tmp_path: Path, pem: Path, make: object, reason: str
) -> None:
    van = Van(tmp_path / "docs", pem)
    good = signed(2)
    assert van.receive(good).applied
    status = van.receive(make())  # type: ignore[operator]
    assert not status.applied and status.reason.startswith(reason), status
    assert (tmp_path / "docs" / "config.envelope").read_bytes() == good
    assert van.store.highest()["config"] == 2


def test_fleet_documents_and_manifests(tmp_path: Path, pem: Path) -> None:
    van = Van(tmp_path / "docs", pem)
    assert van.receive(signed(1, vehicle=None, fleet="north")).applied
    route = json.loads(ROUTE_MANIFEST.read_text()) | {"vehicle": "van-7"}
    assert van.receive(signed(1, kind="manifest", body=json.dumps(route).encode()), kind="manifest").applied
    other = json.dumps(route | {"vehicle": "van-8"}).encode()
    status = van.receive(signed(2, kind="manifest", body=other), kind="manifest")
    assert status.reason.startswith("schema")
    # signed, for this van, a JSON object, but no manifest by its schema (no depot, no stops)
    bare = json.dumps({"manifest_id": "m1", "vehicle": "van-7"}).encode()
    status = van.receive(signed(3, kind="manifest", body=bare), kind="manifest")
    assert status.reason.startswith("schema") and not status.applied


def test_expiry_is_judged_on_event_time_not_the_wall_clock(tmp_path: Path, pem: Path) -> None:
    van = Van(tmp_path / "docs", pem)
    long_ago = parse_iso_time("2001-01-01T00:00:00Z")  # long past by this machine's clock
    assert van.receive(signed(1, expires=long_ago), at=long_ago - 60).applied
    far = parse_iso_time("2099-01-01T00:00:00Z")  # far ahead of this machine's clock
    assert van.receive(signed(2, expires=far), at=far).reason.startswith("expired")


def test_a_restart_cannot_be_tricked(tmp_path: Path, pem: Path) -> None:
    first = Van(tmp_path / "docs", pem)
    assert first.receive(signed(7)).applied
    again = Van(tmp_path / "docs", pem)  # a new process on the same disk
    assert again.receive(signed(7)).reason.startswith("old_version")
    assert again.receive(signed(6)).reason.startswith("old_version")
    assert again.receive(signed(8)).applied


def test_a_crash_between_the_two_files_still_raises_the_bar(tmp_path: Path, pem: Path) -> None:
    van = Van(tmp_path / "docs", pem)
    assert van.receive(signed(2)).applied
    (tmp_path / "docs" / "config.envelope").write_bytes(signed(9))  # written; versions.json not yet
    assert Van(tmp_path / "docs", pem).receive(signed(8)).reason.startswith("old_version")
    (tmp_path / "docs" / "versions.json").write_text("{garbage")  # damaged: the envelope still counts
    assert Van(tmp_path / "docs", pem).stage.highest["config"] == 9


def test_a_failed_write_keeps_the_old_document_and_the_bar(tmp_path: Path, pem: Path) -> None:
    van = Van(tmp_path / "docs", pem)
    good = signed(2)
    assert van.receive(good).applied
    blocker = tmp_path / "docs" / "config.envelope.tmp"
    blocker.mkdir()  # the temporary file cannot be created: the write fails (as root too)
    status = van.receive(signed(3))
    assert not status.applied and status.reason.startswith("apply_failed"), status
    assert (tmp_path / "docs" / "config.envelope").read_bytes() == good
    blocker.rmdir()
    assert van.receive(signed(3)).applied  # the failed version is not counted as taken


def test_a_second_copy_in_flight_is_a_replay(tmp_path: Path, pem: Path) -> None:
    van = Van(tmp_path / "docs", pem)
    data = signed(4)
    first = van.stage.handle(Document(NOW, SIGNED + "config", data), van.state)
    second = van.stage.handle(Document(NOW, SIGNED + "config", data), van.state)
    assert len(first.effects) == 1
    (status,) = second.records
    assert isinstance(status, DocumentStatus) and status.reason.startswith("old_version")
