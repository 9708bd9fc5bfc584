"""gpsd-py3 (polling) against our streaming GpsdDriver, on one real gpsd fed by gpsfake.

The evidence behind docs/dependencies-gpsd.md. Run:

    .venv/bin/python bench/gpsd_py3_polling.py [--log tests/data/nmea/gpsd/haicom-305N.log]
        [--cycle 0.05] [--poll-s 0.25]

1. Polling: gpsfake replays a log (``--cycle`` s per sentence; haicom-305N has 5 sentences per
   epoch, so 0.05 s is a 4 Hz receiver) and gpsd-py3 calls ``get_current()`` (``?POLL``) every
   ``--poll-s``, the receiver's own rate. gpsfake's pipe mode (``-p``) prints every report gpsd
   sends: that is the reference both clients are compared with.
2. No position: the first two sentences of the BU-353 log (GSA "3D fix" before any GGA/RMC) are
   replayed alone, so gpsd holds a mode-3 TPV without lat/lon for as long as gpsd-py3 polls.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpsd  # gpsd-py3

from firmware_bridge.gps.gpsd_client import GpsdDriver
from firmware_bridge.gps.tpv import fix_from_tpv
from protocols.records import Fix, parse_iso_time
from tests.pipeline_fixtures import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "tests/data/nmea/gpsd"


@dataclass
class Run:
    tpvs: list[dict[str, object]] = field(default_factory=list)
    streamed: list[Fix] = field(default_factory=list)
    polled: list[tuple[int, float, float, str]] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


def run(log: Path, cycle: float, poll_s: float, tmp: Path) -> Run:
    """Replay ``log`` once; poll with gpsd-py3 and stream with GpsdDriver until gpsfake ends."""
    port = free_port()
    out = tmp / f"{log.name}.pipe"
    r = Run()
    with out.open("wb") as sink:
        fake = subprocess.Popen(
            ["gpsfake", "-p", "-1", "-q", "-P", str(port), "-c", str(cycle),
             "-r", '?WATCH={"json":true}', str(log)],
            stdout=sink, stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(tmp)},
            start_new_session=True,
        )  # fmt: skip
    driver = GpsdDriver(port=port, backoff_initial_s=0.05, backoff_max_s=0.2)
    try:
        wait_port(port)
        driver.start(r.streamed.append)
        gpsd.connect(port=port)
        while fake.poll() is None:
            try:
                resp = gpsd.get_current()
            except Exception as exc:  # what gpsd-py3 raises is part of the finding
                r.errors[f"{type(exc).__name__}: {exc}"[:70]] += 1
                if isinstance(exc, OSError | json.JSONDecodeError):
                    break
            else:
                r.polled.append((resp.mode, resp.lat, resp.lon, resp.time))
                if resp.mode >= 2 and resp.lat == 0.0 and resp.lon == 0.0:
                    r.zero.append(f"{resp!r}, position() = {resp.position()}, time = {resp.time!r}")
            time.sleep(poll_s)
        fake.wait(30)
        time.sleep(0.3)
        try:
            gpsd.get_current()
        except Exception as exc:
            r.errors[f"after gpsd exited: {type(exc).__name__}: {exc}"[:70]] += 1
    finally:
        driver.stop()
        if fake.poll() is None:
            os.killpg(fake.pid, signal.SIGTERM)
            time.sleep(0.5)
            if fake.poll() is None:
                os.killpg(fake.pid, signal.SIGKILL)
            fake.wait()
    for line in out.read_bytes().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("class") == "TPV":
            r.tpvs.append(obj)
    return r


def describe(title: str, r: Run) -> None:
    reference = [f for f in map(fix_from_tpv, r.tpvs) if f is not None]
    no_latlon = sum(1 for o in r.tpvs if o.get("mode") in (2, 3) and ("lat" not in o or "lon" not in o))
    sent = {f.time for f in reference}
    polled = collections.Counter(parse_iso_time(t) for mode, _, _, t in r.polled if mode >= 2 and t)
    print(f"== {title}")
    print(f"gpsd sent {len(r.tpvs)} TPVs: {len(reference)} with a position ({len(sent)} epochs),"
          f" {no_latlon} with mode>=2 but no lat/lon")  # fmt: skip
    same = r.streamed == reference
    print(f"GpsdDriver (stream): {len(r.streamed)} fixes, identical to gpsd's in order: {same}")
    seen, repeats = sent & set(polled), sum(n - 1 for n in polled.values())
    print(f"gpsd-py3 (poll): {len(r.polled)} answers; epochs seen {len(seen)} of {len(sent)},"
          f" missed {len(sent - seen)}, answers repeating an epoch {repeats},"
          f" 'fixes' at 0,0: {len(r.zero)}")  # fmt: skip
    for z in r.zero[:2]:
        print(f"    {z}")
    for text, n in r.errors.most_common():
        print(f"    raised {n:3d}x  {text}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, default=LOGS / "haicom-305N.log")
    ap.add_argument("--cycle", type=float, default=0.05, help="gpsfake delay between sentences (s)")
    ap.add_argument("--poll-s", type=float, default=0.25, help="gpsd-py3 get_current() interval (s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        describe(f"{args.log.name}, {args.cycle} s per sentence, polled every {args.poll_s} s",
                 run(args.log, args.cycle, args.poll_s, tmp))  # fmt: skip
        bu353 = (LOGS / "bu353-glonass.log").read_bytes().splitlines()
        head = [line for line in bu353 if line.startswith(b"$")]
        no_position = tmp / "bu353-glonass-first-two-sentences.log"
        no_position.write_bytes(b"\r\n".join(head[:2] * 20) + b"\r\n")
        describe("BU-353 before its first position (GSA 3D, no GGA/RMC), polled every 0.25 s",
                 run(no_position, 0.1, 0.25, tmp))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
