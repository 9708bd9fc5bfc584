"""``dropline sim``: a delivery day for N vans, played through the real drivers (NMEA and scanner
pseudo-terminals, a python-can virtual bus) into real agents, against a collector at ``--grpc``
or an embedded one (SQLite, gRPC on loopback, mutual TLS from a development PKI made in the work
directory). Each scenario of ``dropline_cli.simulator.day.SCENARIOS`` switches on by ``--scenario``;
the network outage stops the embedded collector and starts it again on the same store and
address, and the agent restart kills a ``dropline agent`` subprocess with SIGKILL. Prints one JSON
line per van (the agent's status) and one with what the collector stored.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropline_cli.simulator.day import SCENARIOS, Day, plan
from dropline_cli.simulator.play import Progress, play


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vans", type=int, default=1, help="how many vans (default 1)")
    parser.add_argument("--stops", type=int, default=3, help="stops per van (default 3)")
    parser.add_argument("--scale", type=float, default=20.0, help="simulated seconds per second (default 20)")
    parser.add_argument(
        "--scenario", action="append", default=[], choices=SCENARIOS, help="switch a scenario on (repeatable)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("sim-output"), help="outboxes, store, PKI")
    parser.add_argument("--grpc", help="a running collector's gRPC address (default: an embedded one)")
    parser.add_argument("--tls-dir", type=Path, help="with --grpc: a `dropline pki` directory")
    parser.add_argument("--plaintext", action="store_true", help="embedded collector without TLS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Van:
    day: Day
    folder: Path
    progress: Progress = field(default_factory=Progress)
    status: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def make_pki(root: Path, vans: list[str]) -> None:
    """A development CA, a collector certificate for loopback and one per van (``dropline pki``)."""
    from dropline_cli import pki

    if not (root / "ca.pem").exists():
        pki.init(root)
    pki.issue_collector(root, "main", ["localhost", "127.0.0.1"])
    for van in vans:
        pki.issue_vehicle(root, van)


def uplink_body(addr: str, van: str, tls_root: Path | None) -> str:
    """The [uplink] section of a van's configuration."""
    body = f'transport = "grpc"\ntarget = "{addr}"\nack_timeout_s = 3.0\n'
    if tls_root is None:
        return body + "insecure_local_test = true\n"
    return (
        body + f'tls_ca = "{tls_root / "ca.pem"}"\n'
        f'tls_cert = "{tls_root / "vehicles" / f"{van}.pem"}"\n'
        f'tls_key = "{tls_root / "vehicles" / f"{van}.key"}"\n'
    )


class EmbeddedCollector:
    """A collector on loopback that a network outage can stop and start again (same store file,
    same address), as a collector host going away does."""

    def __init__(self, db: Path, tls_root: Path | None, http: bool = False) -> None:
        self.db = db
        self.addr = f"127.0.0.1:{free_port()}"
        self.http_addr = f"127.0.0.1:{free_port()}" if http else None
        self.tls: Any = None
        if tls_root is not None:
            from protocols.tls import TlsFiles

            c = tls_root / "collectors"
            self.tls = TlsFiles(tls_root / "ca.pem", c / "main.pem", c / "main.key")
        self.collector: Any = None
        self.lock = threading.Lock()
        self.outages = 0

    def start(self) -> None:
        from cloud.collector import Collector

        with self.lock:
            if self.collector is None:
                self.collector = Collector(
                    self.db, grpc_addr=self.addr, tls=self.tls, http_addr=self.http_addr
                )
                self.collector.start()

    def stop(self) -> None:
        with self.lock:
            if self.collector is not None:
                self.collector.stop()
                self.collector = None

    def outage(self, down: bool) -> None:
        """Cut or restore the link on another thread: a collector's stop grace must not hold
        up the day being played."""
        self.outages += down
        threading.Thread(target=self.stop if down else self.start, name="sim-outage").start()


def plan_fleet(n: int, stops: int, scenarios: frozenset[str], start: float, **kw: Any) -> list[Day]:
    """``n`` vans leaving the same depot on loops turned apart, each with the scenarios on."""
    return [
        plan(f"van-{i + 1:02d}", start, stops, scenarios, bearing_deg=360.0 * i / max(1, n), **kw)
        for i in range(n)
    ]


def run_fleet(
    days: list[Day],
    work: Path,
    scale: float,
    uplink: Callable[[str], str],
    outage: Callable[[bool], None] | None = None,
    on_start: Callable[[list[Van]], None] | None = None,
) -> list[Van]:
    """Play every van's day at once, one thread each; the network outage is driven by the
    first van that has one (the link is the fleet's: one collector)."""
    vans = [Van(day, work / day.vehicle) for day in days]
    driver = next((v for v in vans if v.day.outage is not None), None)

    def one(van: Van) -> None:
        try:
            van.status = play(
                van.day,
                van.folder,
                scale,
                uplink(van.day.vehicle),
                outage=outage if van is driver else None,
                progress=van.progress,
            )
        except Exception as exc:  # reported per van, never hiding the others' results
            van.error = f"{type(exc).__name__}: {exc}"
            van.progress.done = True

    threads = [threading.Thread(target=one, args=(v,), name=f"sim-{v.day.vehicle}") for v in vans]
    for t in threads:
        t.start()
    if on_start is not None:
        on_start(vans)
    for t in threads:
        t.join()
    return vans


@contextmanager
def collector_for(args: argparse.Namespace, work: Path, vans: list[str], http: bool = False) -> Iterator[Any]:
    """The embedded collector (started, TLS unless ``--plaintext``), or None with ``--grpc``."""
    if args.grpc:
        yield None
        return
    tls_root = None if args.plaintext else work / "pki"
    if tls_root is not None:
        make_pki(tls_root, vans)
    hub = EmbeddedCollector(work / "collector.db", tls_root, http=http)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def run(args: argparse.Namespace) -> int:
    from protocols.errors import UsageError

    if args.vans < 1 or args.scale <= 0:
        raise UsageError("sim: --vans must be at least 1 and --scale positive")
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    days = plan_fleet(args.vans, args.stops, frozenset(args.scenario), float(int(time.time())))
    names = [d.vehicle for d in days]
    with collector_for(args, work, names) as hub:
        if hub is not None:
            addr, tls_root = hub.addr, (None if args.plaintext else work / "pki")
        else:
            addr, tls_root = args.grpc, args.tls_dir
        vans = run_fleet(
            days, work, args.scale, lambda v: uplink_body(addr, v, tls_root), hub.outage if hub else None
        )
    for van in vans:
        print(json.dumps({"vehicle": van.day.vehicle, "error": van.error, "status": van.status}, default=str))
    if hub is not None:
        from cloud.collector import open_store

        store = open_store(hub.db)
        print(json.dumps({"collector": str(hub.db), "vehicles": [p.as_json() for p in store.vehicles()]}))
    return 1 if any(v.error for v in vans) else 0
