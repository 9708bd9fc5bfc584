"""Plays a :class:`~dropline_cli.simulator.day.Day` into a live agent through its real drivers:
NMEA on a pseudo-terminal (``nmea-serial``), DBC-encoded frames on a python-can ``virtual`` bus
(``python-can``), scanner lines on a second pseudo-terminal (``serial``).

``scale`` > 1 runs faster than real time. GNSS time comes from the sentences and the agent's time
base measures the rate (GNSS seconds per host second), so the agent's records do not depend on
the scale. After the day the receiver keeps talking (the van parked at the depot) until the agent
has read everything, so the end of a day does not look like a lost GPS at any speed. With an
uplink, the agent is then started once more with every device silent until the collector has
acknowledged its whole outbox, as a van's next start sends what its shutdown committed.

Where the agent runs: in this process (a thread) by default, because python-can's ``virtual``
bus lives in one process. A day with ``restart_at`` (the agent-restart scenario) runs ``dropline
agent`` as a subprocess, killed with SIGKILL at that moment and started again on the same outbox,
as a power cut would; that agent reads NMEA and scans through the same pseudo-terminals, and no
CAN (no cross-process python-can bus is installed here), which the status says.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropline_cli.simulator.canbus import KONA_DBC, Encoder
from dropline_cli.simulator.day import Day
from dropline_cli.simulator.nmea import epoch

TAIL_S = 1.5
"""Host seconds the receiver keeps talking after the day: the drivers' reads and the agent's
reorder window (0.5 host seconds at any scale) are over well within it."""
ROUTE = "arrive_s = 10.0\nconfirm_s = 2.0\n"
"""The sim's ``[route]`` thresholds: a stop counts as arrived after 10 s in its fence (the
default 30 s pass-by suppression would swallow the short stops of a test day)."""


DRAIN_S = 60.0
"""At most this long for the collector to acknowledge what the day's agent left unsent."""


def _wait_acked(outbox: Path, limit_s: float) -> None:
    import sqlite3

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        try:
            with sqlite3.connect(outbox, timeout=5) as db:
                if db.execute("SELECT COUNT(*) FROM records WHERE acked = 0").fetchone()[0] == 0:
                    return
        except sqlite3.Error:
            continue


def _pty() -> tuple[int, str]:
    master, slave = pty.openpty()
    tty.setraw(slave)
    return master, os.ttyname(slave)


def agent_toml(
    day: Day, folder: Path, gps: str, scanner: str, uplink: str, *, can: bool = True, route: str = ROUTE
) -> Path:
    """The van's configuration for this day (``uplink`` is a TOML [uplink] body)."""
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(day.manifest, indent=1))
    config = folder / "agent.toml"
    can_section = (
        f'[can]\ndriver = "python-can"\ninterface = "virtual"\nchannel = "sim-{day.vehicle}"\n'
        f'dbc = "{KONA_DBC}"\nmapping = "kona_ev"\n\n'
        if can
        else ""
    )
    config.write_text(
        f'[vehicle]\nid = "{day.vehicle}"\n\n[outbox]\npath = "{folder / "outbox.db"}"\n\n'
        f"[uplink]\n{uplink}\n\n"
        f'[gps]\ndriver = "nmea-serial"\nport = "{gps}"\n\n{can_section}'
        f'[scanner]\ndriver = "serial"\nport = "{scanner}"\n\n[route]\nmanifest = "{manifest}"\n{route}'
    )
    return config


@dataclass
class Progress:
    """What the player has done so far, read by a status line on another thread."""

    step: int = 0
    steps: int = 0
    soc_pct: float = 0.0
    scans: int = 0
    restarts: int = 0
    outage: bool = False
    done: bool = False
    agent: Any = None
    """The in-process agent while it runs (its outbox and uplink statistics), else None."""
    notes: list[str] = field(default_factory=list)


class _Thread:
    """The agent in this process."""

    def __init__(self, config_path: Path, progress: Progress) -> None:
        from agent.config import load
        from agent.runtime import Agent

        self.agent = Agent(load(config_path))
        progress.agent = self.agent
        self.runner = threading.Thread(target=self.agent.run, name="sim-agent", daemon=True)
        self.runner.start()

    def stop(self) -> dict[str, Any]:
        if not self.runner.is_alive():
            return dict(self.agent.status())
        self.agent.stop_requested.set()
        self.runner.join(60)
        return dict(self.agent.status())


class _Process:
    """``dropline agent`` in a subprocess, so it can be killed for real."""

    def __init__(self, config_path: Path, folder: Path) -> None:
        self.config_path = config_path
        self.log = (folder / "agent.log").open("ab")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "dropline_cli", "agent", "--config", str(self.config_path)]
        return subprocess.Popen(cmd, stdout=self.log, stderr=self.log)

    def kill_and_restart(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = self._start()

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        finally:
            self.log.close()
        return {"exit": code, "can": "none (subprocess agent)"}


def play(
    day: Day,
    folder: Path,
    scale: float = 1.0,
    uplink: str = 'transport = "none"',
    *,
    outage: Callable[[bool], None] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run an agent for ``day`` in ``folder`` and play the day into it; the agent's status at the
    end. ``outage(True)``/``outage(False)`` is called when the day's network outage starts and
    ends (the caller cuts and restores the link)."""
    import can

    progress = progress if progress is not None else Progress()
    progress.steps = len(day.steps)
    folder.mkdir(parents=True, exist_ok=True)
    gps_master, gps_port = _pty()
    scan_master, scan_port = _pty()
    as_process = day.restart_at is not None
    config = agent_toml(day, folder, gps_port, scan_port, uplink, can=not as_process)
    encoder = Encoder()
    runner: _Thread | _Process = _Process(config, folder) if as_process else _Thread(config, progress)
    bus = None if as_process else can.Bus(interface="virtual", channel=f"sim-{day.vehicle}")
    restarted = in_outage = False

    def send(t: float, step_index: int) -> None:
        step = day.steps[step_index]
        os.write(gps_master, epoch(t, step.position).encode())
        if bus is not None:
            for fid, data in encoder.frames(step.soc_pct, step.speed_kmh, step.ignition):
                bus.send(can.Message(arbitration_id=fid, data=data, is_extended_id=False))

    try:
        t0 = day.steps[0].t
        wall0 = time.monotonic()
        for i, step in enumerate(day.steps):
            delay = wall0 + (step.t - t0) / scale - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if isinstance(runner, _Process) and not restarted and step.t >= (day.restart_at or 0.0):
                runner.kill_and_restart()
                restarted = True
                progress.restarts += 1
            if outage is not None and day.outage is not None:
                inside = day.outage[0] <= step.t < day.outage[1]
                if inside != in_outage:
                    outage(inside)
                    in_outage = progress.outage = inside
            send(step.t, i)
            for raw in step.scans:
                os.write(scan_master, (raw + "\r\n").encode())
                progress.scans += 1
            progress.step, progress.soc_pct = i + 1, step.soc_pct
        if in_outage and outage is not None:
            outage(False)
            progress.outage = False
        tail_end = time.monotonic() + TAIL_S
        k = 1
        while time.monotonic() < tail_end:  # parked at the depot, the receiver still talking
            time.sleep(max(0.0, wall0 + (day.steps[-1].t + k - t0) / scale - time.monotonic()))
            send(day.steps[-1].t + k, len(day.steps) - 1)
            k += 1
        status = runner.stop()
        if "none" not in uplink:  # what the shutdown committed goes at the next start, as on a van
            runner = _Process(config, folder) if as_process else _Thread(config, progress)
            _wait_acked(folder / "outbox.db", DRAIN_S)
            status["drained"] = runner.stop()
    finally:
        runner.stop()
        progress.agent = None
        progress.done = True
        if bus is not None:
            bus.shutdown()
        os.close(gps_master)
        os.close(scan_master)
    return status
