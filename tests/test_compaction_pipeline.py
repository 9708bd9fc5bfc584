"""The pipeline fault tests of tests/test_pipeline_faults.py run again with the compactor on
(a 5 m SED bound): a real agent process and a real collector over gRPC and over MQTT, kill -9 of
the agent and a black-holed link. They end, as there, comparing the collector's store with the
agent's outbox record by record, so what is compared is the track the collector decoded from the
compacted segments (referenced to fixes it acked) against the fixes the van committed; here we
also check that the track is thinned and, where no process died, that every fix of the drive
lies within the bound of the stored track."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from protocols.records import Fix
from tests import test_pipeline_faults as faults
from tests.pipeline_fixtures import export, load_barefoot
from tests.test_track_codec import worst_sed

BOUND_M = 5.0


@pytest.fixture
def compacted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every agent of the fault tests gets ``[compaction] max_error_m = 5``."""
    plain = faults.sources

    def sources(tmp: Path, **kw: Any) -> str:
        return plain(tmp, **kw) + f"\n[compaction]\nmax_error_m = {BOUND_M}\n"

    monkeypatch.setattr(faults, "sources", sources)
    yield


def stored_track(db: Path) -> list[Fix]:
    rows = export(db, "fixes")
    return [Fix(datetime.fromisoformat(r["time"]).timestamp(), 2, r["lat"], r["lon"]) for r in rows]


def test_kill_9_of_the_agent_20_times_with_a_5_m_bound(tmp_path: Path, compacted: None) -> None:
    faults.test_kill_9_of_the_agent_20_times_during_heavy_upload(tmp_path)
    # every restart replays the drive from its start, so count distinct fix times: the thinned
    # drive, plus a few fixes per restart (each run commits its first fix and what a kill cut)
    kept = len({f.time for f in stored_track(tmp_path / "collector.db")})
    drive = len(load_barefoot()) * 10
    print(f"kept {kept} of {drive} fix times")
    assert 0 < kept < drive / 3


@pytest.mark.parametrize("transport", ["grpc", "mqtt"])
def test_network_black_holed_with_a_5_m_bound(tmp_path: Path, compacted: None, transport: str) -> None:
    faults.test_network_black_holed_with_the_process_alive(tmp_path, transport)
    track = sorted(stored_track(tmp_path / "collector.db"), key=lambda f: f.time)
    drive = load_barefoot()
    first = [f for f in track if f.time <= drive[-1].time]  # the first of the two replays
    assert 0 < len(first) < len(drive) / 3
    assert worst_sed(drive, track) <= BOUND_M + 0.05  # + the codec grid's rounding, well under
