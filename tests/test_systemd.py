"""systemd/: the units pass ``systemd-analyze verify`` with nothing on stderr (it exits 0 on unknown
keys) and ``systemd-analyze security --offline=yes`` rates the agent at most 2.0; the real agent
process speaks sd_notify on a real ``$NOTIFY_SOCKET``: READY=1 once up, WATCHDOG=1 from its loop,
STOPPING=1 on SIGTERM, then exits 0 with every record flushed to the outbox."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_fixtures import agent_config

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze absent (scripts/install-system-deps.sh test installs systemd)"
)


def _local_copy(unit: str, tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's dropline (verify checks it exists)."""
    installed = "/opt/dropline/.venv/bin/dropline"
    text = (UNITS / unit).read_text().replace(installed, str(ROOT / ".venv/bin/dropline"))
    path = tmp / unit
    path.write_text(text)
    return path


@needs_analyze
@pytest.mark.parametrize("unit", ["dropline-agent.service", "dropline-collector.service"])
def test_units_verify_without_a_word(unit: str, tmp_path: Path) -> None:
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "verify", str(_local_copy(unit, tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


@needs_analyze
def test_verify_would_catch_an_unknown_key(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key exits 0 but speaks on stderr."""
    assert ANALYZE is not None
    path = _local_copy("dropline-agent.service", tmp_path)
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    out = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert "ProtectSytem" in out.stderr


@needs_analyze
@pytest.mark.parametrize("unit", ["dropline-agent.service", "dropline-collector.service"])
def test_exposure_is_low(unit: str, tmp_path: Path) -> None:
    limit = 2.0
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(_local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert found, out.stdout[-2000:] + out.stderr
    assert float(found.group(1)) <= limit, out.stdout


def test_the_agent_unit_asks_for_what_the_issue_names() -> None:
    text = (UNITS / "dropline-agent.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=dropline",
        "StateDirectory=dropline",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+$", text, re.M)


def _receive_one(sock: socket.socket, seen: list[str], deadline: float) -> None:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        seen.append(sock.recv(4096).decode())
    except TimeoutError:
        raise AssertionError(f"nothing more by the deadline; got {seen}") from None


def _receive(sock: socket.socket, want: str, deadline: float, seen: list[str]) -> None:
    while want not in seen:
        _receive_one(sock, seen, deadline)


def test_the_agent_notifies_pings_and_flushes_on_sigterm(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = [
        f'{{"time": "2024-05-01T08:{i // 60:02d}:{i % 60:02d}.000Z", "lat": 48.1{i:03d}, "lon": 11.5}}'
        for i in range(200)
    ]
    trace.write_text("\n".join(lines) + "\n")
    sources = f'[gps]\ndriver = "trace-file"\npath = "{trace}"\nreplay_interval_s = 0.01\n'
    config = agent_config(tmp_path, "van-sd", "none", "", sources=sources)
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=address, WATCHDOG_USEC="400000", PYTHONUNBUFFERED="1"
    )
    with (tmp_path / "agent.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropline_cli", "agent", "--config", str(config)],
            stdout=log,
            stderr=log,
            env=env,
            cwd=ROOT,
        )
    seen: list[str] = []
    try:
        _receive(sock, "READY=1", time.monotonic() + 60, seen)
        # WATCHDOG_USEC 0.4 s: a ping every 0.2 s while the loop turns; wait for three.
        deadline = time.monotonic() + 30
        while seen.count("WATCHDOG=1") < 3:
            _receive_one(sock, seen, deadline)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "agent.log").read_text()[-2000:]
        _receive(sock, "STOPPING=1", time.monotonic() + 5, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert seen[0] == "READY=1"
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        held = db.execute("SELECT count(*) FROM records").fetchone()[0]
    assert held > 0  # what the drivers delivered before SIGTERM is in the outbox
