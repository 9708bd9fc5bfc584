"""The ETA stage on the recorded route day (tests/cases/route-day) with S2's window moved so that
it will be late: ETA erosion raised once and cleared, a resequence requested, its recorded answer
replayed to identical output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.core import Core, default_stages
from agent.effects import HANDLERS, resequence
from agent.events import EffectResult
from agent.replay import Replay, export_rows, load_config
from agent.stages.base import Effect
from agent.stages.receipts import EFFECT_RESULT
from protocols.records import Alert, Record, parse_iso_time

CASE = Path(__file__).parent / "cases" / "route-day"
S2_WINDOW_END = "2014-09-10T05:05:00Z"  # the van reaches S2 at about 05:11 UTC


def core(config: Any) -> Core:
    return Core(default_stages(route=config.route, eta=config.eta))


def late_manifest(tmp_path: Path) -> Path:
    doc = json.loads((CASE / "manifest.json").read_text())
    s2 = next(s for s in doc["stops"] if s["id"] == "S2")
    s2["window"] = ["2014-09-10T04:50:00Z", S2_WINDOW_END]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    return path


def run(manifest: Path, effects: Path | None = None) -> tuple[list[str], list[Effect]]:
    config = load_config(CASE / "agent.toml")
    replay = Replay(config, effects=effects, core=core(config), manifest=manifest)
    records: list[Record] = []
    asked: list[Effect] = []
    for event in replay.events():
        out = replay.core.handle(event)
        records += out.records
        asked += out.effects
    return [json.dumps(row, sort_keys=True) for row in export_rows(records)], asked


def test_late_stop_raises_erosion_resequences_and_replays_identically(tmp_path: Path) -> None:
    manifest = late_manifest(tmp_path)
    _, asked = run(manifest)
    assert [e.name for e in asked] == ["resequence"]  # rate-limited: one request for one erosion
    assert HANDLERS["resequence"] is resequence
    # The shell's worker answers; the receipts stage records it; a replay feeds the record back.
    answer = EffectResult(asked[0].time + 1.0, "resequence", resequence(asked[0]))
    recorded = tmp_path / "effects.jsonl"
    alert = Alert(
        answer.time, EFFECT_RESULT, "info", "resequence done", {**answer.result, "effect": "resequence"}
    )
    recorded.write_text("".join(json.dumps(row) + "\n" for row in export_rows([alert])))
    second, _ = run(manifest, recorded)
    third, _ = run(manifest, recorded)
    assert second == third  # byte-identical replays
    rows = [json.loads(r) for r in second]
    erosion = [r for r in rows if r["kind"] == "alert" and r["code"].startswith("eta_erosion")]
    codes = [r["code"] for r in erosion if r["attrs"]["stop"] == "S2"]
    assert codes == [
        "eta_erosion",
        "eta_erosion_cleared",
    ]
    erosion = [r for r in erosion if r["attrs"]["stop"] == "S2"]
    raised, cleared = erosion
    arrived = next(
        r for r in rows if r["kind"] == "stop_update" and r["stop"] == "S2" and r["status"] == "arrived"
    )
    # The expected lateness is the ETA past the window end; S2 really was late by about that much.
    true_lateness = parse_iso_time(arrived["time"]) - parse_iso_time(S2_WINDOW_END)
    assert true_lateness > 0
    assert abs(float(raised["attrs"]["expected_lateness_s"]) - true_lateness) < 300
    assert cleared["attrs"]["why"] == "closed"
    assert any(r["kind"] == "alert" and r["code"] == EFFECT_RESULT for r in rows)
    etas = [r for r in rows if r["kind"] == "eta"]
    assert etas and all(r["manifest"] == "munich-2014-09-10" for r in etas)
    # Once the stage heard back, S2 (the late one) leads the order of the ETAs that follow.
    after = [r for r in etas if parse_iso_time(r["time"]) >= answer.time]
    assert after and after[0]["stops"][0] == json.loads(answer.result["order"])[0]


def test_on_time_day_raises_no_erosion() -> None:
    rows, asked = run(CASE / "manifest.json")
    assert not asked
    assert not [r for r in rows if '"eta_erosion' in r]
