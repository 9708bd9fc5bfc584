"""The core on recorded inputs, merged by event time on one thread: the records the agent would
commit, byte-identical on every run and at every replay speed (``replay_interval_s`` is a live
pacing setting and is ignored here; nothing reads a clock).

The rules, all on event time:

* **Paths** in the configuration that are relative are taken from the configuration file's folder.
* **GNSS** (``trace-file``, ``nmea-file``): each fix at its own time, the reference.
* **CAN logs** (``can-log``) hold host-clock stamps (often seconds since the logger started), and
  a file holds no pair of host and GNSS times to measure an offset from (the live agent measures
  one, ``agent/timebase.py``): the log is anchored so that its first frame falls on the first fix,
  every later frame keeping its distance from the first. Without a GNSS source, as recorded.
* **Scan files** (``scan-file``): a timed line (``TIME<TAB>RAW``) at its time; an untimed line
  number *n* at the first fix's time + *n* times :data:`SCAN_SPACING_S` (without a GNSS source, *n*
  times :data:`SCAN_SPACING_S` after the Unix epoch).
* **A manifest** (``--manifest``, else ``[route] manifest``) enters as a ``manifest``
  :class:`Document` at the first event's time, before that event.
* **Recorded effect results** (``effect_result`` alerts of an earlier run, export JSON lines) are
  fed back as events at their recorded time: the replay never runs an effect itself.
* Sources are merged with ``heapq.merge`` in the order gps, can, scanner, effects (ties keep that
  order); each source in its file order. Between two consecutive events a :class:`Tick` is
  injected at every whole second strictly between them (at most :data:`TICK_SPAN_MAX_S` seconds of
  ticks per silence: no core timer is longer), so timers fire as in a live run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, load
from agent.core import Core, default_stages
from agent.events import CoreEvent, Document, EffectResult
from agent.sources import Reading, Recorded, Source, build_sources
from agent.stages.receipts import EFFECT_RESULT
from protocols.convert import to_json, to_pb
from protocols.errors import InputError
from protocols.records import Record, Tick, parse_iso_time
from protocols.rejects import Rejects

SCAN_SPACING_S = 10.0
"""Event-time spacing of untimed scans, counted from the first fix."""

TICK_SPAN_MAX_S = 3600.0
"""Longest run of injected ticks in one silence between events."""


def load_config(path: Path) -> AgentConfig:
    """``agent/config.py``'s ``load`` with relative input paths taken from the file's folder.
    (``load`` checks files from the working directory, so the check runs from the folder: the
    process's working directory changes for that moment; call from one thread.)"""
    path = path.resolve()
    with contextlib.chdir(path.parent):
        return with_paths_from(load(path), path.parent)


def with_paths_from(config: AgentConfig, folder: Path) -> AgentConfig:
    """``config`` with every relative input path taken from ``folder``."""

    def fix(section: Any, *names: str) -> Any:
        if section is None:
            return None
        changes = {n: folder / getattr(section, n) for n in names if not getattr(section, n).is_absolute()}
        return dataclasses.replace(section, **changes)

    route = config.route
    if route.manifest != Path("") and not route.manifest.is_absolute():
        route = dataclasses.replace(route, manifest=folder / route.manifest)
    return dataclasses.replace(
        config,
        gps=fix(config.gps, "path"),
        can=fix(config.can, "path", "dbc"),
        scanner=fix(config.scanner, "path"),
        route=route,
    )


class Replay:
    """One replay of a configuration's file sources through a core. ``rejects`` holds each
    source's counters once :meth:`records` has been consumed."""

    def __init__(
        self,
        config: AgentConfig,
        effects: Path | None = None,
        core: Core | None = None,
        manifest: Path | None = None,
    ) -> None:
        self.sources = build_sources(config)
        live = [s.section for s in self.sources if s.recording is None]
        if live:
            raise InputError(f"replay: {', '.join(live)}: a live driver; replay needs recorded files")
        self.effects_path = effects
        stages = default_stages(route=config.route, compaction=config.compaction, eta=config.eta)
        self.core = core if core is not None else Core(stages)
        if manifest is None and config.route.manifest != Path(""):
            manifest = config.route.manifest
        self.manifest = manifest.read_bytes() if manifest is not None else None
        self.rejects = {s.section: Rejects(s.section) for s in self.sources}
        self.effects_requested = 0

    def _first_fix_time(self) -> float | None:
        gps = next((s for s in self.sources if s.section == "gps"), None)
        if gps is None or gps.recording is None:
            return None
        first = next(iter(gps.recording(Rejects("gps"))), None)
        return None if first is None else first[0]

    def _stream(self, source: Source, first_fix: float | None) -> Iterator[CoreEvent]:
        assert source.recording is not None
        readings = source.recording(self.rejects[source.section])
        if source.section == "can":
            return _anchored(readings, first_fix)
        if source.section == "scanner":
            return _scans_laid_out(readings, first_fix or 0.0)
        return (r for _, _, r in readings)

    def events(self) -> Iterator[CoreEvent]:
        """The merged stream, with ticks."""
        first_fix = self._first_fix_time()
        streams: list[Iterable[CoreEvent]] = [self._stream(s, first_fix) for s in self.sources]
        if self.effects_path is not None:
            streams.append(recorded_effects(self.effects_path))
        merged: Iterator[CoreEvent] = heapq.merge(*streams, key=lambda e: e.time)
        if self.manifest is not None:
            merged = _manifest_first(self.manifest, merged)
        return with_ticks(merged)

    def records(self) -> Iterator[Record]:
        """What the agent would commit, in commit order."""
        for event in self.events():
            out = self.core.handle(event)
            self.effects_requested += len(out.effects)
            yield from out.records


def export_rows(records: Iterable[Record]) -> Iterator[dict[str, Any]]:
    """The export form (``dropline export``) of each record, numbered 1.. in commit order."""
    for seq, record in enumerate(records, start=1):
        yield to_json(to_pb(seq, record))


def _manifest_first(body: bytes, events: Iterator[CoreEvent]) -> Iterator[CoreEvent]:
    """The manifest as a Document at the first event's time, then the events."""
    first = next(events, None)
    if first is None:
        return
    yield Document(first.time, "manifest", body)
    yield first
    yield from events


def _anchored(readings: Iterator[Recorded], anchor: float | None) -> Iterator[Reading]:
    shift: float | None = None
    for t, _, reading in readings:
        assert t is not None
        if shift is None:
            shift = 0.0 if anchor is None else anchor - t
        yield reading if shift == 0.0 else dataclasses.replace(reading, time=t + shift)


def _scans_laid_out(readings: Iterator[Recorded], start: float) -> Iterator[Reading]:
    for t, number, reading in readings:
        yield reading if t is not None else dataclasses.replace(reading, time=start + number * SCAN_SPACING_S)


def with_ticks(events: Iterable[CoreEvent]) -> Iterator[CoreEvent]:
    """``events`` with a Tick at every whole second strictly between consecutive event times
    (measured from the latest time so far, so a late event adds none)."""
    latest: float | None = None
    for event in events:
        t = event.time
        if latest is not None and t > latest:
            k = math.floor(latest) + 1
            end = min(t, latest + TICK_SPAN_MAX_S + 1)
            while k < end:
                yield Tick(float(k))
                k += 1
        if latest is None or t > latest:
            latest = t
        yield event


def recorded_effects(path: Path) -> Iterator[EffectResult]:
    """The ``effect_result`` alerts of an export (JSON lines), as the events that produced them.
    Other lines are skipped; a line that is not JSON is an error naming file and line."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc})") from None
            if not (
                isinstance(row, dict) and row.get("kind") == "alert" and row.get("code") == EFFECT_RESULT
            ):
                continue
            attrs = dict(row.get("attrs") or {})
            try:
                yield EffectResult(parse_iso_time(str(row["time"])), str(attrs.pop("effect")), attrs)
            except (KeyError, ValueError) as exc:
                raise InputError(
                    f"{path}:{number}: effect_result without a usable time or effect ({exc})"
                ) from None
