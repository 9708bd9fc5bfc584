"""GpsdDriver against a real gpsd fed by gpsfake; GpsdStream (bytes -> Fix | rejection) fuzzed.

gpsfake runs in pipe mode (``-p``): its own watcher client prints every report gpsd sends, which is
the reference the driver must match TPV for TPV. In pipe mode gpsfake waits 1.4 s after its
watcher connects before it feeds the log, and the driver is started before gpsd even listens, so
it is watching before the first sentence. With ``-1`` gpsfake stops gpsd at the end of the log.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.gps.gpsd_client import (
    GpsdDriver,
    GpsdStream,
    iter_fixes_from_gpsd_json,
    watch_command,
)
from protocols.records import Fix, iso_time
from tests.conftest import DATA, free_port

LOGS = DATA / "nmea" / "gpsd"
ALL_LOGS = sorted(p.name for p in LOGS.glob("*.log"))


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """A liveness guard, not a timing assertion: fail with ``what`` if ``cond`` never holds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class GpsFake:
    """One gpsfake and the gpsd it spawns, in a process group of their own so a stop reaches both.

    ``TMPDIR`` points gpsfake's control socket into the test's directory.
    """

    def __init__(self, logs: list[str], port: int, workdir: Path, *, once: bool = True, cycle: float = 0.0):
        self.port = port
        stem = f"gpsfake-{port}-{time.monotonic_ns()}"
        self.out = workdir / f"{stem}.jsonl"
        self.err = workdir / f"{stem}.err"
        cmd = ["gpsfake", "-p", "-q", "-P", str(port), "-r", '?WATCH={"json":true}']
        if once:
            cmd.append("-1")
        if cycle:
            cmd += ["-c", str(cycle)]
        cmd += [str(LOGS / name) for name in logs]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                env={**os.environ, "TMPDIR": str(workdir)},
                start_new_session=True,
            )

    def reports(self) -> list[dict[str, Any]]:
        """What gpsfake's watcher printed; a line cut by killing gpsfake is left out."""
        out = []
        for line in self.out.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                assert self.proc.returncode != 0, line
        return out

    def tpvs(self) -> list[dict[str, Any]]:
        return [o for o in self.reports() if o.get("class") == "TPV"]

    def wait_done(self, timeout: float = 30.0) -> None:
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, self.err.read_text(errors="replace")

    def gpsd_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """gpsfake's SIGTERM handler stops gpsd; SIGKILL for whatever is left of the group."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
        self.signal_group(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def gpsfakes(tmp_path: Path) -> Iterator[Callable[..., GpsFake]]:
    started: list[GpsFake] = []

    def start(logs: list[str], port: int, **kwargs: Any) -> GpsFake:
        fake = GpsFake(logs, port, tmp_path, **kwargs)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@dataclass
class Run:
    driver: GpsdDriver
    fixes: list[Fix]


def start_driver(port: int, **kwargs: Any) -> Run:
    kwargs.setdefault("name", f"gpsd-test-{port}-{time.monotonic_ns()}")
    driver = GpsdDriver(port=port, backoff_initial_s=0.02, backoff_max_s=0.1, **kwargs)
    fixes: list[Fix] = []
    driver.start(fixes.append)
    return Run(driver, fixes)


def lost(run: Run, times: int = 1) -> bool:
    """The driver has seen gpsd go away ``times`` times (and read all it sent before)."""
    return run.driver.reconnects >= times


def stop_driver(run: Run) -> None:
    run.driver.stop()
    assert not any(t.name == f"driver-{run.driver.name}" for t in threading.enumerate()), (
        "driver thread leaked"
    )


@pytest.fixture
def drivers() -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(port: int, **kwargs: Any) -> Run:
        run = start_driver(port, **kwargs)
        started.append(run)
        return run

    yield start
    for run in started:
        stop_driver(run)


def gpsd_time(text: str) -> float:
    """gpsd's ISO 8601 UTC time, read with the standard library alone."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def expected_fields(tpvs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What gpsd's own TPVs say, field by field, for each one with a position (mode 2/3, time,
    lat, lon, not simulated), read here from the JSON without ``fix_from_tpv``. gpsd's TPV has
    no ``hdop`` or ``nSat`` (they are SKY fields: none of the 1600 TPVs in the .chk files has
    one), so a Fix from gpsd carries none either."""
    return [
        {
            "time": gpsd_time(t["time"]),
            "mode": t["mode"],
            "lat": t["lat"],
            "lon": t["lon"],
            "alt_msl": t.get("altMSL"),
            "speed": t.get("speed"),
            "track": t.get("track"),
            "hdop": t.get("hdop"),
            "sats": t.get("nSat"),
        }
        for t in tpvs
        if t.get("mode") in (2, 3) and {"time", "lat", "lon"} <= t.keys() and t.get("status") != 8
    ]


def fields(fixes: list[Fix]) -> list[dict[str, Any]]:
    return [asdict(f) for f in fixes]


def sane(fix: Fix) -> bool:
    return (
        fix.mode in (2, 3)
        and -90.0 <= fix.lat <= 90.0
        and -180.0 <= fix.lon <= 180.0
        and (fix.lat, fix.lon) != (0.0, 0.0)
        and math.isfinite(fix.time)
    )


# ---------------------------------------------------------------- every log, one real gpsd each


@dataclass
class Replay:
    tpvs: list[dict[str, Any]]
    fixes: list[Fix]
    rejects: dict[str, int]
    no_position: int


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Replay]]:
    """Every log through its own gpsfake, all at once (a few seconds in all), each with a driver."""
    work = tmp_path_factory.mktemp("gpsfake")
    yield {
        name: Replay(
            fake.tpvs(), list(run.fixes), run.driver.rejects.as_dict(), run.driver.stream.no_position
        )
        for name, run, fake in _replay(ALL_LOGS, work)
    }


def _replay(logs: list[str], work: Path) -> list[tuple[str, Run, GpsFake]]:
    """``logs`` through a gpsfake each, at once, with a driver each; after gpsd exits."""
    fakes: dict[str, GpsFake] = {}
    runs: dict[str, Run] = {}
    ports: set[int] = set()
    try:
        for name in logs:
            port = free_port()
            while port in ports:
                port = free_port()
            ports.add(port)
            fakes[name] = GpsFake([name], port, work)
            runs[name] = start_driver(port)  # retries until gpsd listens
        for name, run in runs.items():
            wait_for(run.driver.watching.is_set, 20, f"{name}: gpsd acknowledging the driver's WATCH")
        for fake in fakes.values():
            fake.wait_done(40)
        for name, run in runs.items():
            # gpsd is gone: once the driver saw the end of its stream, it has read every byte
            wait_for(partial(lost, run), 10, f"{name}: the driver noticing gpsd exit")
        return [(name, run, fakes[name]) for name, run in runs.items()]
    finally:
        for run in runs.values():
            stop_driver(run)
        for fake in fakes.values():
            fake.stop()


@pytest.mark.parametrize("log", ALL_LOGS)
def test_every_fix_gpsd_sends_arrives(replays: dict[str, Replay], log: str) -> None:
    r = replays[log]
    assert fields(r.fixes) == expected_fields(r.tpvs)
    assert r.rejects == {}
    assert len(r.fixes) + r.no_position == len(r.tpvs)


def chk_key(fix: Fix) -> tuple[float, float, float]:
    # gpsd 3.22 (here) dates some old logs 1024 weeks late (its week-rollover guess) or a day off
    # (bt451); the newer gpsd that wrote the .chk does not. Time of day and position agree.
    return (round(fix.time % 86400, 3), fix.lat, fix.lon)


@pytest.mark.parametrize("log", ALL_LOGS)
def test_fixes_agree_with_gpsd_chk(replays: dict[str, Replay], log: str) -> None:
    with (LOGS / f"{log}.chk").open("rb") as f:
        chk = list(iter_fixes_from_gpsd_json(f))
    assert {chk_key(f) for f in replays[log].fixes} == {chk_key(f) for f in chk}


def test_never_a_position_gpsd_did_not_have(replays: dict[str, Replay]) -> None:
    everything = [f for r in replays.values() for f in r.fixes]
    assert len(everything) > 500
    assert all(sane(f) for f in everything)

    # The Geko in demo mode: gpsd reports "3D fixes" with a simulated position and no time.
    geko = replays["garmin-geko201.log"]
    assert any(t.get("mode") == 3 and t.get("status") == 8 for t in geko.tpvs)
    assert geko.fixes == []

    # BU-353 and Teseo begin with GSA "3D" before any position: mode-3 TPVs without lat/lon,
    # which gpsd-py3 turns into a fix at 0,0. Here they are no fix at all.
    for log in ("bu353-glonass.log", "st-teseo-liv4f.log"):
        r = replays[log]
        blind = [t for t in r.tpvs if t.get("mode") == 3 and "lat" not in t]
        assert blind, f"{log}: gpsd no longer sends position-less mode-3 TPVs"
        assert len(r.fixes) == sum(1 for t in r.tpvs if "lat" in t and "time" in t)


# ---------------------------------------------------------------- gpsd going away and coming back


def test_reconnects_when_gpsd_restarts(gpsfakes: Callable[..., GpsFake], drivers: Callable[..., Run]) -> None:
    port = free_port()
    run = drivers(port)

    # 1. gpsd ends cleanly (gpsfake stops it at the end of the log)
    first = gpsfakes(["firefly-II.log"], port)
    wait_for(run.driver.watching.is_set, 20, "the first WATCH")
    first.wait_done()
    # (a reconnect may land on the exiting gpsd and be reset: count "at least", not "exactly")
    wait_for(partial(lost, run, 1), 10, "the driver noticing gpsd exit")
    assert fields(run.fixes) == expected_fields(first.tpvs()) and len(run.fixes) == 23

    # 2. gpsd comes back on the same port, then is killed mid-stream
    second = gpsfakes(["nmea-rtk.log"], port, once=False, cycle=0.005)
    wait_for(lambda: len(run.fixes) > 23 + 20, 20, "fixes from the restarted gpsd")
    lost_before = run.driver.reconnects
    second.signal_group(signal.SIGKILL)
    second.proc.wait()
    wait_for(partial(lost, run, lost_before + 1), 10, "the driver noticing gpsd killed")
    wait_for(lambda: not run.driver.connected.is_set(), 10, "the driver failing to reconnect to nothing")
    got = len(run.fixes)
    # gpsfake's own output died with it (block-buffered); gpsd 3.22 gives this log's .chk fixes
    with (LOGS / "nmea-rtk.log.chk").open("rb") as f:
        rtk = {chk_key(fix) for fix in iter_fixes_from_gpsd_json(f)}
    assert {chk_key(fix) for fix in run.fixes[23:]} <= rtk

    # 3. and back again: fixes flow as if nothing happened
    lost_before = run.driver.reconnects
    third = gpsfakes(["bt451.log"], port)
    wait_for(run.driver.watching.is_set, 20, "the WATCH on the third gpsd")
    third.wait_done()
    wait_for(partial(lost, run, lost_before + 1), 10, "the driver noticing the third gpsd exit")
    assert fields(run.fixes[got:]) == expected_fields(third.tpvs())
    assert run.driver.rejects.total == 0
    assert all(sane(f) for f in run.fixes)


def test_silent_gpsd_is_detected_and_reconnected(
    gpsfakes: Callable[..., GpsFake], drivers: Callable[..., Run]
) -> None:
    """gpsd stopped (SIGSTOP) keeps the TCP connection open but says nothing: the driver probes,
    gets no answer, and reconnects; when gpsd continues, fixes flow again."""
    port = free_port()
    run = drivers(port, silence_s=2.0)  # gpsd stalls ~1 s activating a device: not "silent"
    fake = gpsfakes(["nmea-rtk.log"], port, once=False, cycle=0.005)
    wait_for(lambda: len(run.fixes) > 10, 20, "first fixes")
    # however the start went, a streaming gpsd is never mistaken for a silent one
    streaming_from, lost_before = len(run.fixes), run.driver.reconnects
    wait_for(lambda: len(run.fixes) > streaming_from + 200, 30, "fixes streaming")
    assert run.driver.reconnects == lost_before
    gpsd = fake.gpsd_pid()
    os.kill(gpsd, signal.SIGSTOP)
    try:
        wait_for(partial(lost, run, lost_before + 1), 30, "the driver giving up on a silent gpsd")
    finally:
        os.kill(gpsd, signal.SIGCONT)
    n = len(run.fixes)
    wait_for(lambda: len(run.fixes) > n + 10, 20, "fixes after gpsd continued")
    assert run.driver.rejects.total == 0
    assert all(sane(f) for f in run.fixes)


@pytest.fixture
def bare_gpsd(tmp_path: Path) -> Iterator[int]:
    """A real gpsd with no receiver at all (the van's GPS unplugged), on a free loopback port."""
    port = free_port()
    gpsd = shutil.which("gpsd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert gpsd, "gpsd is not installed"
    proc = subprocess.Popen(
        [gpsd, "-N", "-S", str(port), "-F", str(tmp_path / "gpsd.sock")],
        env={**os.environ, "GPSD_SHM_KEY": f"0x4770{port:04X}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_quiet_gpsd_is_not_a_dead_gpsd(bare_gpsd: int, drivers: Callable[..., Run]) -> None:
    """gpsd without a receiver sends nothing after its WATCH reply, but answers the probes: the
    driver stays connected. gpsd answers on loopback in milliseconds; 1 s is allowed."""
    run = drivers(bare_gpsd, silence_s=1.0)
    wait_for(run.driver.watching.is_set, 20, "the WATCH")
    # VERSION: one greeting on connect, then one answer per probe
    wait_for(lambda: run.driver.stream.classes["VERSION"] >= 4, 30, "three probes answered")
    assert run.driver.reconnects == 0
    assert run.driver.rejects.total == 0


def gpsd_devices(port: int) -> list[str]:
    """The devices gpsd knows, asked on a plain socket (``?DEVICES;`` does not start them)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, sock.makefile("rb") as f:
        sock.sendall(b"?DEVICES;\n")
        for line in f:
            obj = json.loads(line)
            if obj.get("class") == "DEVICES":
                return [d["path"] for d in obj["devices"]]
    raise AssertionError("gpsd closed the connection without a DEVICES report")


def test_watch_one_device(gpsfakes: Callable[..., GpsFake], drivers: Callable[..., Run]) -> None:
    """``device`` names the receiver to watch; one gpsd does not know is retried, never streamed."""
    port = free_port()
    fake = gpsfakes(["firefly-II.log"], port)
    paths: list[str] = []

    def known() -> bool:
        try:
            paths[:] = gpsd_devices(port)
        except OSError:
            return False
        return len(paths) == 1

    wait_for(known, 20, "gpsd knowing the receiver")
    one = drivers(port, device=paths[0])
    other = drivers(port, device="/dev/no-such-gps")
    wait_for(one.driver.watching.is_set, 20, "the WATCH for the receiver")
    fake.wait_done()
    wait_for(partial(lost, one, 1), 10, "the end of the stream")
    assert fields(one.fixes) == expected_fields(fake.tpvs()) and len(one.fixes) == 23
    assert other.fixes == []
    assert other.driver.rejects.counts["gpsd_error"] >= 1
    assert other.driver.reconnects >= 1
    assert not other.driver.watching.is_set()


# ---------------------------------------------------------------- the pure part: bytes -> Fix


def test_watch_command() -> None:
    assert watch_command() == b'?WATCH={"enable":true,"json":true}\n'
    cmd = watch_command('/dev/ttyACM0 "x"')
    assert cmd.startswith(b"?WATCH=") and cmd.endswith(b"\n")
    assert json.loads(cmd[len(b"?WATCH=") :]) == {"enable": True, "json": True, "device": '/dev/ttyACM0 "x"'}


def tpv_line(**fields: Any) -> bytes:
    return json.dumps({"class": "TPV", "device": "/dev/ttyACM0", **fields}).encode()


GOOD = tpv_line(
    mode=3, time="2024-05-01T12:00:00.000Z", lat=52.1, lon=4.3, altMSL=12.5, speed=1.5, track=90.0, hdop=0.9
)
# by hand: 2024-05-01 is day 19844 since 1970-01-01 (54 years, 13 of them leap, + 121 days)
GOOD_FIX = Fix(
    time=19844 * 86400 + 12 * 3600.0, mode=3, lat=52.1, lon=4.3, alt_msl=12.5, speed=1.5, track=90.0, hdop=0.9
)


def test_partial_lines_are_joined_across_reads() -> None:
    s = GpsdStream()
    data = GOOD + b"\r\n" + GOOD + b"\n"
    got = [f for i in range(len(data)) for f in s.push(data[i : i + 1])]
    assert got == [GOOD_FIX, GOOD_FIX]
    assert s.rejects.total == 0


def test_a_line_cut_by_a_disconnect_is_not_glued_to_the_next_connection() -> None:
    s = GpsdStream()
    assert s.push(GOOD[:30]) == []
    s.end()  # the connection dropped
    assert s.push(GOOD[30:] + b"\n" + GOOD + b"\n") == [GOOD_FIX]
    assert s.rejects.as_dict() == {"truncated": 1, "bad_json": 1}


def test_position_less_and_impossible_tpvs() -> None:
    s = GpsdStream()
    lines = [
        tpv_line(mode=1),
        tpv_line(mode=3),  # GSA says 3D, no position yet
        tpv_line(mode=3, lat=52.1, lon=4.3),  # no time yet
        tpv_line(mode=3, time="2024-05-01T12:00:00Z", lat=0.0),  # lon missing: never 0
        tpv_line(mode=3, time="2024-05-01T12:00:00Z", lat=40.4, lon=-3.6, status=8),  # demo mode
        tpv_line(mode=3, time="2024-05-01T12:00:00Z", lat=95.0, lon=4.3),
        tpv_line(mode=3, time="2024-13-01T12:00:00Z", lat=52.1, lon=4.3),
        tpv_line(mode=3, time="2024-05-01T12:00:00Z", lat="52.1", lon=4.3),
        b'{"class":"TPV","mode":3,"time":"2024-05-01T12:00:00Z","lat":NaN,"lon":4.3}',
        b'{"class":"TPV","mode":3,"time":"2024-05-01T12:00:00Z","lat":1e999,"lon":4.3}',
        b'{"class":"ERROR","message":"Unrecognized request"}',
        b'{"no":"class"}',
        b"[1,2]",
        b"\xff\xfe{}",
        b'{"class":"TPV"\x00}',
        GOOD,
    ]
    assert s.push(b"\n".join(lines) + b"\n") == [GOOD_FIX]
    assert s.no_position == 5
    assert s.rejects.as_dict() == {
        "bad_tpv": 5,
        "gpsd_error": 1,
        "no_class": 1,
        "not_object": 1,
        "bad_utf8": 1,
        "bad_json": 1,
    }


def test_overlong_line_is_dropped_up_to_its_newline() -> None:
    junk = b'{"class":"TPV","mode":3,"pad":"' + b"x" * 300 + b'"}'
    data = GOOD + b"\n" + junk + b"\n" + GOOD + b"\n"
    for size in (1, 7, 64, len(data)):
        s = GpsdStream(max_line=200)
        got = [f for i in range(0, len(data), size) for f in s.push(data[i : i + size])]
        assert len(got) == 2, size
        assert s.rejects.as_dict() == {"overlong": 1}, size


def test_per_epoch_file_decoding_matches_the_chk_epochs() -> None:
    # README of tests/data/nmea/gpsd: epochs = distinct times among the TPV fixes
    epochs = {
        "beidou-bd.log": 4, "bt451.log": 12, "bu353-glonass.log": 9, "firefly-II.log": 23,
        "garmin-geko201.log": 0, "gp-320fw-2019-04-07-coldboot.log": 1, "haicom-305N.log": 67,
        "magellan-ec10.log": 21,
        "nmea-fuzzy-cases.log": 14, "nmea-rtk.log": 122, "quectel-eg25-g.log": 23,
        "quectel-l76k-nmea.log": 150, "skytraq-err.log": 0, "st-teseo-liv4f.log": 12,
        "ublox-8.log": 72, "ublox-neo-m9n-nmea.log": 61, "venus634lp.log": 5,
    }  # fmt: skip
    assert sorted(epochs) == ALL_LOGS
    for log, n in epochs.items():
        with (LOGS / f"{log}.chk").open("rb") as f:
            fixes = list(iter_fixes_from_gpsd_json(f, per_epoch=True))
        assert len(fixes) == n, log
        assert len({f.time for f in fixes}) == n, log
    # a later report of an epoch wins; fields it lacks come from earlier ones of the same epoch
    lines = [
        tpv_line(mode=2, time="2024-05-01T12:00:00Z", lat=1.0, lon=2.0, speed=3.0).decode(),
        tpv_line(mode=3, time="2024-05-01T12:00:00Z", lat=1.5, lon=2.5, altMSL=10.0).decode(),
        "$GPGGA,not,json*00",
        tpv_line(mode=3, time="2024-05-01T12:00:01Z", lat=1.6, lon=2.6).decode(),
    ]
    merged = list(iter_fixes_from_gpsd_json(lines, per_epoch=True))
    assert [(f.mode, f.lat, f.speed, f.alt_msl) for f in merged] == [
        (3, 1.5, 3.0, 10.0),
        (3, 1.6, None, None),
    ]


# hypothesis: any bytes, in any chunks, never raise; good reports around bad ones come through

MAX_LINE = 400  # longer than any good TPV generated here (about 250 bytes)

good_tpvs = st.builds(
    lambda mode, t, lat, lon, alt, speed, track, hdop: {
        "class": "TPV",
        "mode": mode,
        "time": iso_time(t.timestamp()),
        "lat": lat,
        "lon": lon,
        **({"altMSL": alt} if alt is not None else {}),
        **({"speed": speed} if speed is not None else {}),
        **({"track": track} if track is not None else {}),
        **({"hdop": hdop} if hdop is not None else {}),
    },
    st.sampled_from([2, 3]),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.none() | st.floats(-400, 9000, allow_nan=False),
    st.none() | st.floats(0, 100, allow_nan=False),
    st.none() | st.floats(0, 359.99, allow_nan=False),
    st.none() | st.floats(0.5, 99.99, allow_nan=False),
)

# (line, reject reason or None when it must simply produce nothing)
bad_lines = st.one_of(
    good_tpvs.flatmap(
        lambda o: st.integers(1, len(json.dumps(o)) - 1).map(
            lambda n: (json.dumps(o).encode()[:n], "bad_json")
        )
    ),
    st.binary(max_size=40).map(lambda b: (b"\xff" + b.replace(b"\n", b"").replace(b"\r", b""), "bad_utf8")),
    st.text(max_size=20).map(
        lambda t: (f'{{"class":"TPV"\x00{t}}}'.replace("\n", "").replace("\r", "").encode(), "bad_json")
    ),
    st.one_of(st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=10)).map(
        lambda v: (json.dumps(v).encode(), "not_object")
    ),
    st.integers(MAX_LINE + 1, 3 * MAX_LINE).map(lambda n: (b"{" + b"x" * n, "overlong")),
    good_tpvs.map(lambda o: (json.dumps({**o, "lat": 95.5}).encode(), "bad_tpv")),
    good_tpvs.map(lambda o: (json.dumps({**o, "time": "2024-13-01T00:00:00Z"}).encode(), "bad_tpv")),
    good_tpvs.map(lambda o: (json.dumps({k: v for k, v in o.items() if k != "lat"}).encode(), None)),
    st.sampled_from([(b"", None), (b"   ", None), (b'{"class":"SKY","satellites":[]}', None)]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(
        st.one_of(good_tpvs.map(lambda o: ("good", o)), bad_lines.map(lambda b: ("bad", b))), max_size=25
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    crlf=st.booleans(),
)
def test_good_reports_survive_bad_ones_in_any_chunking(
    items: list[tuple[str, Any]], cuts: list[int], crlf: bool
) -> None:
    eol = b"\r\n" if crlf else b"\n"
    data = b""
    want: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    for kind, item in items:
        if kind == "good":
            data += json.dumps(item).encode() + eol
            want += expected_fields([item])  # every field, straight from the JSON
        else:
            line, reason = item
            data += line + eol
            if reason is not None:
                reasons[reason] += 1
    s = GpsdStream(max_line=MAX_LINE)
    got: list[Fix] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        got += s.push(data[start:cut])
        start = cut
    s.end()
    assert fields(got) == want
    assert s.rejects.as_dict() == dict(reasons)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    s = GpsdStream(max_line=MAX_LINE)
    start = 0
    got: list[Fix] = []
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        got += s.push(data[start:cut])
        start = cut
    s.end()
    assert all(sane(f) for f in got)
    assert s.rejects.total <= data.count(b"\n") + data.count(b"\r") + 1  # at most one per line


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.text(max_size=60),
            st.dictionaries(
                st.sampled_from(["class", "mode", "lat", "lon", "time", "status"]),
                st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
            ).map(json.dumps),
        ),
        max_size=30,
    )
)
def test_file_decoding_never_raises(lines: list[str]) -> None:
    for per_epoch in (False, True):
        assert all(sane(f) for f in iter_fixes_from_gpsd_json(lines, per_epoch=per_epoch))
