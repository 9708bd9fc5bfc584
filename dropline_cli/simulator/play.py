"""Plays a :class:`~dropline_cli.simulator.day.Day` into a live agent through its real drivers:
NMEA on a pseudo-terminal (``nmea-serial``), DBC-encoded frames on a python-can ``virtual`` bus
(``python-can``; that bus lives in one process, so the agent runs in this process), scanner lines
on a second pseudo-terminal (``serial``). ``scale`` > 1 runs faster than real time: GNSS time comes
from the sentences, so the agent's fixes and route records do not depend on it."""

from __future__ import annotations

import json
import os
import pty
import threading
import time
import tty
from pathlib import Path

from dropline_cli.simulator.canbus import KONA_DBC, Encoder
from dropline_cli.simulator.day import Day
from dropline_cli.simulator.nmea import epoch


def _pty() -> tuple[int, str]:
    master, slave = pty.openpty()
    tty.setraw(slave)
    return master, os.ttyname(slave)


def agent_toml(day: Day, folder: Path, gps: str, scanner: str, uplink: str) -> Path:
    """The van's configuration for this day (``uplink`` is a TOML [uplink] body)."""
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(day.manifest, indent=1))
    config = folder / "agent.toml"
    config.write_text(
        f'[vehicle]\nid = "{day.vehicle}"\n\n[outbox]\npath = "{folder / "outbox.db"}"\n\n'
        f"[uplink]\n{uplink}\n\n"
        f'[gps]\ndriver = "nmea-serial"\nport = "{gps}"\n\n'
        f'[can]\ndriver = "python-can"\ninterface = "virtual"\nchannel = "sim-{day.vehicle}"\n'
        f'dbc = "{KONA_DBC}"\nmapping = "kona_ev"\n\n'
        f'[scanner]\ndriver = "serial"\nport = "{scanner}"\n\n[route]\nmanifest = "{manifest}"\n'
    )
    return config


def play(day: Day, folder: Path, scale: float = 1.0, uplink: str = 'transport = "none"') -> dict[str, object]:
    """Run an agent for ``day`` in ``folder`` and play the day into it; the agent's status at the end."""
    import can

    from agent.config import load
    from agent.runtime import Agent

    gps_master, gps_port = _pty()
    scan_master, scan_port = _pty()
    config = load(agent_toml(day, folder, gps_port, scan_port, uplink))
    encoder = Encoder()

    def start() -> tuple[Agent, threading.Thread]:
        agent = Agent(config)
        runner = threading.Thread(target=agent.run, name=f"agent-{day.vehicle}", daemon=True)
        runner.start()
        return agent, runner

    agent, runner = start()
    bus = can.Bus(interface="virtual", channel=f"sim-{day.vehicle}")
    restarted = False
    try:
        t0 = day.steps[0].t
        wall0 = time.monotonic()
        for step in day.steps:
            delay = wall0 + (step.t - t0) / scale - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if day.restart_at is not None and not restarted and step.t >= day.restart_at:
                agent.stop_requested.set()  # stopped and started again on the same outbox
                runner.join(30)
                agent, runner = start()
                restarted = True
            os.write(gps_master, epoch(step.t, step.position).encode())
            for fid, data in encoder.frames(step.soc_pct, step.speed_kmh, step.ignition):
                bus.send(can.Message(arbitration_id=fid, data=data, is_extended_id=False))
            for raw in step.scans:
                os.write(scan_master, (raw + "\r\n").encode())
        time.sleep(1.5)  # the reorder window and the drivers' last reads
    finally:
        agent.stop_requested.set()
        runner.join(30)
        bus.shutdown()
        os.close(gps_master)
        os.close(scan_master)
    return agent.status()
