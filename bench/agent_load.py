"""The agent under a van's real load: resident memory (peak and steady) and CPU against the budget
(40 MB, 5 % of one core; DESIGN.md "On the van").

The load, through the real drivers: a GNSS receiver at 1 Hz (GGA, GSA, RMC on a pseudo-terminal,
``nmea-serial`` driver) driving the recorded Munich trace; 100 CAN frames a second from the real
Kona Electric log, read by the van's own SocketCAN reader (``python-can`` driver, interface
``socketcan``, the kona_ev mapping); one scan a minute on a second pseudo-terminal (``serial``
scanner driver); the gRPC uplink to a local ``dropline collector`` over mutual TLS (certificates
from ``dropline pki``), as a van is deployed; the delivery manifest of the Munich drive, and
document signatures checked against a trusted fleet key: a signed manifest is pushed through the
collector once the van is up, so the figure includes verifying and swapping it (``--plain`` drops
TLS, the key and the push, for the figure of a bare van).

CAN, three ways (``--can-interface``):

- ``datagram`` (default; this machine has no ``vcan`` module): the frames, in the kernel's
  ``struct can_frame`` layout, are sent from this bench process as datagrams on a Unix socket
  that the agent's :class:`~firmware_bridge.can.socketcan.SocketCanBus` reads in place of the
  ``CAN_RAW`` socket it would bind to ``can0`` (the one line that differs: ``_open``). Frame
  parsing, kernel receive timestamps, the driver, the decoder: all as on the van.
- ``socketcan --can-channel vcan0`` (a Linux with ``vcan``: ``ip link add vcan0 type vcan; ip link
  set vcan0 up``): the real thing, frames sent from this bench process.
- ``virtual``: a python-can virtual bus, which lives inside one process, so the agent process also
  imports python-can (~4 MB: asyncio, wrapt) and runs the thread that sends the frames. No van
  loads python-can for SocketCAN; this is the figure with it.

``--transport mqtt`` sends through a local Mosquitto
(TLS listener from ``dropline pki mosquitto-conf``) to a collector subscribed there.

Memory is ``/proc/<pid>/status`` (VmHWM peak, VmRSS sampled each second: "steady" is the median of
the second half); CPU is utime+stime from ``/proc/<pid>/stat`` over the run after a warm-up,
divided by the wall time.

    .venv/bin/python -m bench.agent_load [--seconds 300] [--warmup 20] [--transport grpc|mqtt]
        [--can-interface datagram|socketcan|virtual] [--plain]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import pty
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The simulator and the test fixtures are imported by the bench process only (in run()): the agent
# child imports this module too, and their ~20 MB must not count in the agent's figures.

BUDGET_MB = 40.0
BUDGET_CPU = 5.0
DATA = ROOT / "tests" / "data"
KONA = DATA / "can" / "kona_ev"
CAN_LOG = KONA / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"
CHANNEL = "agent-load"


def open_pty() -> tuple[int, str]:
    """A pseudo-terminal in raw mode: (master fd we write to, slave path the driver opens)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    return master, path


def sources(gps_port: str, scan_port: str, can_interface: str, can_channel: str) -> str:
    can_interface = "virtual" if can_interface == "virtual" else "socketcan"
    return f"""
[gps]
driver = "nmea-serial"
port = "{gps_port}"

[can]
driver = "python-can"
interface = "{can_interface}"
channel = "{can_channel}"
dbc = "{KONA / "pcan.dbc"}"
mapping = "kona_ev"

[scanner]
driver = "serial"
port = "{scan_port}"
"""


def socketcan_feeder(
    channel: str, rate: float, stop: threading.Event, datagram: Path | None
) -> threading.Thread:
    """In this bench process: the Kona log's frames at ``rate`` a second on a SocketCAN interface,
    or (``datagram``) as ``can_frame`` datagrams to the agent's Unix socket at that path."""
    import socket

    import can
    from can.interfaces.socketcan.socketcan import build_can_frame

    frames = [build_can_frame(m) for m in can.LogReader(str(CAN_LOG)) if not m.is_error_frame][:2000]
    if datagram is None:
        sock = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
        sock.bind((channel,))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def feed() -> None:
        due = time.monotonic()
        for i in itertools.count():
            if stop.is_set():
                break
            try:
                if datagram is None:
                    sock.send(frames[i % len(frames)])
                else:
                    sock.sendto(frames[i % len(frames)], str(datagram))
            except (FileNotFoundError, ConnectionRefusedError):  # the agent's socket is not bound yet
                pass
            due += 1.0 / rate
            stop.wait(max(0.0, due - time.monotonic()))
        sock.close()

    thread = threading.Thread(target=feed, name="socketcan-feeder", daemon=True)
    thread.start()
    return thread


def bind_datagram_can(path: Path) -> None:
    """In the agent process: SocketCanBus reads ``can_frame`` datagrams from a Unix socket at
    ``path`` instead of opening a ``CAN_RAW`` socket (which needs a kernel with vcan)."""
    import socket

    from firmware_bridge.can import socketcan

    def _open(channel: str, fd: bool) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # qemu-user refuses it: frames are stamped on arrival
            sock.setsockopt(socket.SOL_SOCKET, socketcan.SO_TIMESTAMPNS, 1)
        sock.bind(str(path))
        return sock

    socketcan.SocketCanBus._open = staticmethod(_open)  # type: ignore[method-assign]


def child(config: str, rate: float, can_interface: str) -> int:
    """In the agent process: run the agent (with ``virtual``, also send the Kona log's frames at
    ``rate`` a second on python-can's virtual bus; the other buses are fed from the bench process)."""
    from dropline_cli import agent as agent_cmd

    if os.environ.get("AGENT_LOAD_MODULES"):  # where the memory goes: the modules loaded, at exit
        import atexit

        where = Path(os.environ["AGENT_LOAD_MODULES"])
        atexit.register(lambda: where.write_text("\n".join(sorted(sys.modules))))
    if can_interface == "datagram":
        bind_datagram_can(Path(config).with_name("can.sock"))
    if can_interface != "virtual":
        return agent_cmd.run(argparse.Namespace(config=Path(config), describe_config=False))
    import can

    frames = [m for m in can.LogReader(str(CAN_LOG)) if not m.is_error_frame][:2000]
    stop = threading.Event()

    def feed() -> None:
        with can.Bus(interface="virtual", channel=CHANNEL) as bus:
            period = 1.0 / rate
            due = time.monotonic()
            i = 0
            while not stop.is_set():
                bus.send(frames[i % len(frames)])
                i += 1
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    stop.wait(delay)

    feeder = threading.Thread(target=feed, name="can-feeder", daemon=True)
    feeder.start()
    args = argparse.Namespace(config=Path(config), describe_config=False)
    try:
        return agent_cmd.run(args)
    finally:
        stop.set()


def trace() -> list[Any]:
    """The Munich drive's positions, with speed and heading from consecutive points."""
    import math

    from dropline_cli.simulator.nmea import Position

    pts = [json.loads(line) for line in (ROOT / "examples" / "munich-drive.jsonl").read_text().splitlines()]
    out = []
    for a, b in itertools.pairwise(pts):
        dy = (b["lat"] - a["lat"]) * 111_195.0
        dx = (b["lon"] - a["lon"]) * 111_195.0 * math.cos(math.radians(a["lat"]))
        out.append(Position(a["lat"], a["lon"], math.hypot(dx, dy), math.degrees(math.atan2(dx, dy)) % 360))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024 / 1e6
    return out


VEHICLE = "case-route"  # the vehicle the Munich manifest (examples/manifest.json) is for
MANIFEST = ROOT / "examples" / "manifest.json"


def fleet_setup(tmp: Path, plain: bool) -> tuple[dict[str, Any], list[str], Path | None]:
    """(the van's uplink TLS settings, the collector's TLS arguments, the fleet's private key);
    empty with ``plain``. The PKI and key are made here, in the bench process."""
    if plain:
        return {}, [], None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dropline_cli import pki
    from protocols import envelope

    root = tmp / "pki"
    pki.init(root)
    pki.issue_vehicle(root, VEHICLE)
    pki.issue_collector(root, "main", ["localhost", "127.0.0.1"])
    key = Ed25519PrivateKey.generate()
    key_path = tmp / "fleet.key"
    key_path.write_bytes(envelope.private_pem(key))
    (tmp / "fleet.pub").write_bytes(envelope.public_pem(key.public_key()))
    van = {
        "tls_ca": str(root / "ca.pem"),
        "tls_cert": str(root / "vehicles" / f"{VEHICLE}.pem"),
        "tls_key": str(root / "vehicles" / f"{VEHICLE}.key"),
    }
    hub = ["--tls-ca", str(root / "ca.pem")]
    hub += [
        "--tls-cert",
        str(root / "collectors" / "main.pem"),
        "--tls-key",
        str(root / "collectors" / "main.key"),
    ]
    return van, hub, key_path


def push_manifest(tmp: Path, db: Path, key_path: Path, mqtt_url: str | None) -> None:
    """The Munich manifest, signed by the fleet key, left for the van in the collector's
    pushed-documents table (gRPC streams send it down; ``dropline config push --db``), or
    published retained on the van's documents topic with a collector's certificate (``--mqtt``)."""
    from protocols import envelope

    key = envelope.load_private_key(key_path.read_bytes())
    signed = envelope.sign(
        MANIFEST.read_bytes(), [key], kind="manifest", version=2, expires=time.time() + 86400, vehicle=VEHICLE
    )
    (tmp / "manifest.signed").write_bytes(signed)
    args = ["config", "push", str(tmp / "manifest.signed"), "--vehicle", VEHICLE]
    if mqtt_url is None:
        args += ["--db", str(db)]
    else:
        pki = tmp / "pki"
        args += ["--mqtt", mqtt_url, "--tls-ca", str(pki / "ca.pem")]
        args += [
            "--tls-cert",
            str(pki / "collectors" / "main.pem"),
            "--tls-key",
            str(pki / "collectors" / "main.key"),
        ]
    subprocess.run([sys.executable, "-m", "dropline_cli", *args], check=True, capture_output=True, cwd=ROOT)


def run(
    seconds: float,
    warmup: float,
    transport: str,
    can_rate: float,
    scan_every: float,
    can_interface: str = "datagram",
    can_channel: str = CHANNEL,
    plain: bool = False,
) -> dict[str, float]:
    from dropline_cli.simulator.nmea import epoch
    from tests.pipeline_fixtures import agent_config, collector, free_port

    scans = [s for s in (DATA / "barcodes" / "scans_raw.txt").read_text().splitlines() if s.strip()]
    positions = trace()
    with tempfile.TemporaryDirectory(prefix="dropline-load-") as folder:
        tmp = Path(folder)
        van_tls, hub_tls, key_path = fleet_setup(tmp, plain)
        port = free_port()
        broker = None
        db = tmp / "collector.db"
        if transport == "grpc":
            hub = collector(tmp, db, grpc_port=port, tls=hub_tls or None)
            target = f"127.0.0.1:{port}"
        else:
            from dropline_cli import pki
            from tests.brokers import Mosquitto

            listener = ""
            if not plain:
                listener = pki.mosquitto_conf(tmp / "pki", port, "127.0.0.1", ["localhost", "127.0.0.1"])[
                    "conf"
                ].read_text()
            broker = Mosquitto(tmp, port, listener=listener)
            broker.start()
            target = f"mqtt://127.0.0.1:{port}"  # TLS from the uplink.tls_* files
            hub = collector(tmp, db, mqtt_url=target, tls=hub_tls or None)
        gps_master, gps_port = open_pty()
        scan_master, scan_port = open_pty()
        extra = sources(gps_port, scan_port, can_interface, can_channel)
        extra += f'\n[route]\nmanifest = "{MANIFEST}"\n'
        if key_path is not None:
            extra += f'\n[documents]\ntrusted_keys = "{tmp / "fleet.pub"}"\n'
        config = agent_config(tmp, VEHICLE, transport, target, sources=extra, uplink=van_tls)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        with (tmp / "agent.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.agent_load",
                    "--child",
                    str(config),
                    "--can-rate",
                    str(can_rate),
                    "--can-interface",
                    can_interface,
                ],
                stdout=log,
                stderr=log,
                cwd=ROOT,
                env=env,
            )
        rss: list[float] = []
        feeding = threading.Event()
        if can_interface != "virtual":
            socketcan_feeder(
                can_channel, can_rate, feeding, tmp / "can.sock" if can_interface == "datagram" else None
            )
        try:
            start = time.monotonic()
            cpu0 = wall0 = None
            n = 0
            next_scan = start + 5.0
            pushed = key_path is None
            while time.monotonic() - start < seconds:
                if proc.poll() is not None:
                    raise SystemExit("agent exited:\n" + (tmp / "agent.log").read_text()[-3000:])
                os.write(gps_master, epoch(time.time(), positions[n % len(positions)]).encode())
                n += 1
                now = time.monotonic()
                if now >= next_scan:
                    os.write(scan_master, (scans[n % len(scans)] + "\r\n").encode())
                    next_scan += scan_every
                if not pushed and now - start >= 5.0 and db.exists():
                    assert key_path is not None
                    push_manifest(tmp, db, key_path, target if transport == "mqtt" else None)
                    pushed = True
                if cpu0 is None and now - start >= warmup:
                    cpu0, wall0 = cpu_seconds(proc.pid), now
                if now - start >= warmup:
                    rss.append(status_mb(proc.pid)["VmRSS"])
                time.sleep(max(0.0, start + n - time.monotonic()))
            assert cpu0 is not None and wall0 is not None
            cpu = 100.0 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
            final = status_mb(proc.pid)
        finally:
            feeding.set()
            proc.terminate()
            proc.wait(30)
            hub.stop()
            if broker is not None:
                broker.stop()
            os.close(gps_master)
            os.close(scan_master)
        with sqlite3.connect(db) as conn:
            kinds = dict(conn.execute("SELECT kind, count(*) FROM records GROUP BY kind").fetchall())
        statuses = [
            json.loads(line)
            for line in subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dropline_cli",
                    "export",
                    "--db",
                    str(db),
                    "--kind",
                    "documents",
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            ).stdout.splitlines()
        ]
    return {
        "peak_mb": final["VmHWM"],
        "steady_mb": statistics.median(rss[len(rss) // 2 :]),
        "cpu_pct": cpu,
        "epochs": float(n),
        "manifests_applied": float(
            sum(1 for d in statuses if d.get("applied") and d.get("document") == "manifest")
        ),
        **{f"stored_{k}": float(v) for k, v in kinds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the run")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before CPU and steady RSS count")
    parser.add_argument("--transport", default="grpc", choices=("grpc", "mqtt"))
    parser.add_argument("--can-rate", type=float, default=100.0, help="CAN frames a second")
    parser.add_argument("--scan-every", type=float, default=60.0, help="seconds between scans")
    parser.add_argument("--can-interface", default="datagram", choices=("datagram", "socketcan", "virtual"))
    parser.add_argument("--can-channel", default=CHANNEL, help="e.g. vcan0 with --can-interface socketcan")
    parser.add_argument("--plain", action="store_true", help="no TLS, no trusted key, no signed manifest")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raise SystemExit(child(args.child, args.can_rate, args.can_interface))
    r = run(
        args.seconds,
        args.warmup,
        args.transport,
        args.can_rate,
        args.scan_every,
        args.can_interface,
        args.can_channel,
        args.plain,
    )
    print(
        f"agent, {args.seconds:.0f} s at 1 Hz GNSS, {args.can_rate:.0f} CAN frames/s, a scan every"
        f" {args.scan_every:.0f} s, {args.transport} uplink"
        f" ({'plaintext' if args.plain else 'mutual TLS, signed manifest pushed'}),"
        f" CAN on {args.can_interface}"
    )
    mem = "within" if r["peak_mb"] <= BUDGET_MB else "OVER"
    cpu = "within" if r["cpu_pct"] <= BUDGET_CPU else "OVER"
    peak, steady = r["peak_mb"], r["steady_mb"]
    print(f"  resident: peak {peak:.1f} MB, steady {steady:.1f} MB (budget {BUDGET_MB:.0f}: {mem})")
    print(f"  CPU: {r['cpu_pct']:.2f} % of one core (budget {BUDGET_CPU:.0f} %: {cpu})")
    stored = {k.removeprefix("stored_"): int(v) for k, v in r.items() if k.startswith("stored_")}
    print(f"  collector stored: {stored} ({int(r['epochs'])} GNSS epochs sent)")
    if not args.plain:
        print(f"  signed manifests the van applied: {int(r['manifests_applied'])}")


if __name__ == "__main__":
    main()
