"""Real processes for the pipeline's fault tests and the uplink benchmark: a collector and an
agent started as ``dropline`` subprocesses on free loopback ports, killed and restarted at will,
and the two sides' stores read back record by record."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from protocols import convert
from protocols.records import Fix, iso_time
from tests.conftest import DATA, free_port

__all__ = ["DATA", "free_port"]  # re-exported for the fault tests and benchmarks

ROOT = Path(__file__).resolve().parent.parent
BAREFOOT = DATA / "traces" / "barefoot_munich" / "x0001-001.json"


def load_barefoot(path: Path = BAREFOOT) -> list[Fix]:
    """The Munich drive (1 s fixes, WKT points, local time with offset) as fixes."""
    fixes = []
    for row in json.loads(path.read_text()):
        lon, lat = (float(v) for v in row["point"].removeprefix("POINT(").removesuffix(")").split())
        t = datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S%z").timestamp()
        fixes.append(Fix(time=t, mode=2, lat=lat, lon=lon))
    return fixes


def load_gpx(path: Path) -> list[Fix]:
    """A GPX 1.0 track (GPSBabel's test logs) as 2D fixes, every point in file order."""
    ns = {"g": "http://www.topografix.com/GPX/1/0"}
    fixes = []
    for pt in ET.parse(path).getroot().iterfind(".//g:trkpt", ns):
        t = pt.findtext("g:time", namespaces=ns)
        assert t is not None, f"{path}: a track point without a time"
        stamp = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
        fixes.append(Fix(time=stamp, mode=2, lat=float(pt.attrib["lat"]), lon=float(pt.attrib["lon"])))
    return fixes


def write_trace(fixes: Iterable[Fix], path: Path) -> Path:
    with path.open("w") as f:
        for fx in fixes:
            f.write(json.dumps({"time": iso_time(fx.time), "lat": fx.lat, "lon": fx.lon}) + "\n")
    return path


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


class Proc:
    """One ``dropline`` subprocess, its stderr kept in a file for the failure message."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dropline_cli", *self.args],
                stdout=err,
                stderr=err,
                env=_env(),
                cwd=ROOT,
            )
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""


def collector(
    tmp: Path,
    db: Path,
    grpc_port: int | None = None,
    mqtt_url: str | None = None,
    tls: list[str] | None = None,
) -> Proc:
    """``tls``: ``--tls-ca/--tls-cert/--tls-key`` arguments; without, a plaintext local test."""
    args = ["collector", "--db", str(db), *(tls if tls is not None else ["--insecure"])]
    if grpc_port:
        args += ["--grpc", f"127.0.0.1:{grpc_port}"]
    if mqtt_url:
        args += ["--mqtt", mqtt_url]
    p = Proc(args, tmp / "collector.log").start()
    if grpc_port:
        wait_port(grpc_port)
    return p


def agent_config(
    tmp: Path,
    vehicle: str,
    transport: str,
    target: str,
    *,
    sources: str = "",
    outbox: dict[str, Any] | None = None,
    uplink: dict[str, Any] | None = None,
) -> Path:
    lines = [f'[vehicle]\nid = "{vehicle}"\n', "[outbox]", f'path = "{tmp / "outbox.db"}"']
    for k, v in (outbox or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines += ["", "[uplink]", f'transport = "{transport}"', f'target = "{target}"']
    if "tls_ca" not in (uplink or {}):
        lines.append("insecure_local_test = true")  # plaintext loopback: these tests are local
    for k, v in (uplink or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = tmp / "agent.toml"
    path.write_text("\n".join(lines) + "\n\n" + sources)
    return path


def agent(tmp: Path, config: Path) -> Proc:
    return Proc(["-v", "agent", "--config", str(config)], tmp / "agent.log").start()


def outbox_records(path: Path) -> dict[int, dict[str, Any]]:
    """Every record the agent committed (its history is kept: retain_acked large in tests)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT seq, kind, body FROM records").fetchall()
    return {seq: convert.to_json(convert.from_body(seq, kind, body)) for seq, kind, body in rows}


def outbox_unacked(path: Path) -> int:
    return outbox_count(path, "acked = 0")


def outbox_acked(path: Path) -> int:
    """Rows the collector has acknowledged, read in one query (two separate counts race with
    the agent's commits in between)."""
    return outbox_count(path, "acked != 0")


def outbox_count(path: Path, where: str = "1") -> int:
    """Rows matching ``where``, counted by SQLite: cheap enough to poll (no record decoded)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute(f"SELECT count(*) FROM records WHERE {where}").fetchone()[0])


def export(db: Path, kind: str = "all") -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "export", "--db", str(db), "--kind", kind],
        capture_output=True,
        env=_env(),
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
