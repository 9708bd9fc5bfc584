"""The serial scanner driver over real pseudo-terminals standing in for the scanner: the 286 raw
scan lines written in small chunks with CRLF, LF and CR line ends, junk between good lines, and a
scanner that is unplugged mid-line and plugged back in (socat's pty links vanish and return)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware_bridge.scanner.lines import MAX_LINE, LineAssembler, Overlong
from firmware_bridge.scanner.parse import parse_scan
from firmware_bridge.scanner.serial_scanner import SerialScannerDriver
from protocols.records import Scan
from tests.conftest import DATA

BARCODES = DATA / "barcodes"
RAW = (BARCODES / "scans_raw.txt").read_bytes()
IDS = (BARCODES / "scans_raw.ids").read_text().split()
LINES = RAW.split(b"\r\n")[:-1]
# Written after a test's data: once it arrives, everything before it has been read, so "nothing
# else came" is checked without waiting for a quiet moment.
SENTINEL = b"]C100106141412345678908"
# The raw scans that break a GS1 rule, checked by hand (mod-10 over the key's digits, weights 3
# and 1 from the right): D0021 D0050 D0051 D0095 D0113 D0122 D0131 D0161 D0168 D0198 D0291 carry
# a wrong check digit (e.g. GTIN-8 15000000: 1*3 + 5*1 = 8, check 2, not 0), D0035 month 00.
RAW_INVALID = {"bad_check_digit": 11, "bad_date": 1, "bad_syntax": 1}  # D0170: an illegal caret


class Collector:
    """A driver sink that lets a test wait for a number of scans."""

    def __init__(self) -> None:
        self.scans: list[Scan] = []
        self._cond = threading.Condition()

    def __call__(self, scan: Scan) -> None:
        with self._cond:
            self.scans.append(scan)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Scan]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.scans) >= n, timeout)
            return list(self.scans)


def _counter_clock() -> Callable[[], float]:
    ticks = iter(range(1_000_000, 2_000_000))
    return lambda: float(next(ticks))


def _write_in_chunks(fd: int, data: bytes, seed: int = 7, largest: int = 23) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, largest)
        pos += os.write(fd, data[pos : pos + size])


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """(master fd we write to as the scanner, slave path the driver opens)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


@pytest.fixture
def driver_on(pty_pair: tuple[int, str]) -> Iterator[tuple[int, SerialScannerDriver, Collector]]:
    master, path = pty_pair
    driver = SerialScannerDriver(path, 115200, clock=_counter_clock())
    sink = Collector()
    thread = driver.start(sink)
    assert driver.connected.wait(5.0), "driver did not open the pty"
    yield master, driver, sink
    driver.stop()
    assert not thread.is_alive()


def _expected_raws() -> list[str]:
    by_id = {}
    for line in (BARCODES / "scans.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        by_id[r["id"]] = r["scan"]
    return [by_id[i] for i in IDS]


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"], ids=["CRLF", "LF", "CR"])
def test_raw_file_through_a_pty_gives_every_scan(
    driver_on: tuple[int, SerialScannerDriver, Collector], ending: bytes
) -> None:
    master, driver, sink = driver_on
    _write_in_chunks(master, RAW.replace(b"\r\n", ending) + SENTINEL + ending)
    scans = sink.wait_for(287)
    assert scans.pop().raw == SENTINEL.decode()  # nothing else came: a CRLF is no empty scan
    expected = _expected_raws()
    assert len(scans) == 286 == len(expected)
    for scan, raw in zip(scans, expected, strict=True):
        assert scan.raw == raw
        direct = parse_scan(raw, scan.time)
        assert (scan.kind, scan.fields, scan.symbology) == (direct.kind, direct.fields, direct.symbology)
    times = [s.time for s in scans]
    assert times == sorted(times) and times[0] >= 1_000_000  # arrival times from the injected clock
    # a scan breaking a GS1 rule is delivered (kind unknown, its error fields) and counted
    assert driver.rejects.as_dict() == RAW_INVALID
    assert Counter(s.fields["error"] for s in scans if "error" in s.fields) == Counter(RAW_INVALID)
    assert all(s.kind == "unknown" for s in scans if "error" in s.fields)
    assert sum(b"\x1d" in line for line in LINES) == 11
    assert sum("\x1d" in s.raw for s in scans) == 11


def test_junk_between_good_lines_is_counted(driver_on: tuple[int, SerialScannerDriver, Collector]) -> None:
    master, driver, sink = driver_on
    junk = b"".join(
        [
            b"]C100106141412345678908\r\n",
            b"abc\x00def\r\n",
            b"\xff\xfe\xfd\r\n",
            b"\x07\x08bell\r\n",
            b"9" * 5000 + b"\r\n",
            b"\r\n\r\n\n\r",
            b"1Z410E7W0392751591\r\n",
            SENTINEL + b"\r\n",
        ]
    )
    _write_in_chunks(master, junk, largest=300)
    scans = sink.wait_for(3)
    assert [s.kind for s in scans] == ["sscc", "tracking", "sscc"]
    assert driver.rejects.as_dict() == {"nul": 1, "invalid_utf8": 1, "control": 1, "overlong": 1}
    assert scans[0].fields["sscc"] == "106141412345678908"


def _socat_pair(folder: Path) -> subprocess.Popen[bytes]:
    scanner, host = folder / "scanner", folder / "host"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={scanner}", f"pty,raw,echo=0,link={host}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5.0
    while not (scanner.exists() and host.exists()):
        assert time.monotonic() < deadline, "socat did not create its pty links"
        time.sleep(0.02)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


@pytest.fixture
def socat_link(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    """A pty pair from socat, restartable by the test; every socat started is stopped here."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    procs = [_socat_pair(tmp_path)]
    yield tmp_path, procs
    for proc in procs:
        _stop(proc)


def _send(host: Path, data: bytes) -> None:
    fd = os.open(host, os.O_WRONLY | os.O_NOCTTY)
    try:
        _write_in_chunks(fd, data)
    finally:
        os.close(fd)


def test_scanner_unplugged_mid_line_and_back(
    socat_link: tuple[Path, list[subprocess.Popen[bytes]]],
) -> None:
    folder, procs = socat_link
    driver = SerialScannerDriver(str(folder / "scanner"), 9600, backoff_initial_s=0.05, backoff_max_s=0.2)
    sink = Collector()
    thread = driver.start(sink)
    try:
        assert driver.connected.wait(5.0)
        _send(folder / "host", b"]E05901234123457\r\n00373400306809981733")  # second read cut off
        sink.wait_for(1)
        deadline = time.monotonic() + 5.0
        while driver.pending == 0 and time.monotonic() < deadline:  # the partial line arrived
            time.sleep(0.01)
        _stop(procs[0])  # unplugged: the pty and its link vanish
        deadline = time.monotonic() + 5.0
        while driver.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not driver.connected.is_set()
        procs.append(_socat_pair(folder))  # plugged back in: a new pty behind the same link
        assert driver.connected.wait(5.0)
        _send(folder / "host", b"RB123456785US\r\n")
        scans = sink.wait_for(2)
        assert [s.kind for s in scans] == ["gtin", "tracking"]
        assert driver.reconnects >= 1
        assert driver.rejects.as_dict() == {"truncated": 1}
    finally:
        driver.stop()
    assert not thread.is_alive()


def test_line_assembler_crlf_split_across_reads() -> None:
    a = LineAssembler(MAX_LINE)
    assert a.feed(b"abc\r") == [b"abc"]
    assert a.feed(b"\ndef\r") == [b"def"]
    assert a.feed(b"\n") == []
    assert a.feed(b"\n") == [b""]
    assert a.feed(b"gh\n\rij") == [b"gh", b""]
    assert a.finish() == b"ij"


def test_line_assembler_overlong_is_reported_once_and_dropped() -> None:
    a = LineAssembler(max_line=8)
    assert a.feed(b"12345") == []
    assert a.feed(b"6789") == [Overlong(9)]
    assert a.feed(b"more junk") == []
    assert a.pending == 0
    assert a.feed(b"tail\nok\n") == [b"ok"]
    assert a.feed(b"x" * 8 + b"\n") == [b"x" * 8]


def test_a_scan_breaking_a_gs1_rule_is_counted_and_passed_on(
    driver_on: tuple[int, SerialScannerDriver, Collector],
) -> None:
    """Misreads a scanner's own check let through, each delivered raw as kind unknown and counted:
    an SSCC ending 9 (GS1 mod 10 over 10614141234567890, weights 3,1,... from the right, sums to
    132: check digit 8), a GTIN-13 ending 8 (590123412345: 83, check 7) and an expiry date (17)
    with month 00."""
    master, driver, sink = driver_on
    bad = [
        ("]C100106141412345678909", "bad_check_digit", "00"),
        ("5901234123458", "bad_check_digit", None),
        ("]C1010590123412345717250000", "bad_date", "17"),
    ]
    data = b"".join(raw.encode() + b"\r\n" for raw, _, _ in bad) + SENTINEL + b"\r\n"
    _write_in_chunks(master, data, largest=5)
    scans = sink.wait_for(4)
    assert [s.raw for s in scans] == [raw for raw, _, _ in bad] + [SENTINEL.decode()]
    for scan, (_, reason, ai) in zip(scans, bad, strict=False):
        assert scan.kind == "unknown"
        assert scan.fields["error"] == reason and scan.fields["error_detail"]
        assert scan.fields.get("error_ai") == ai
    assert scans[-1].kind == "sscc" and "error" not in scans[-1].fields
    assert driver.rejects.as_dict() == {"bad_check_digit": 2, "bad_date": 1}


def test_line_assembler_uses_the_scanner_limit() -> None:
    a = LineAssembler(MAX_LINE)
    assert a.feed(b"9" * MAX_LINE + b"\r\n") == [b"9" * MAX_LINE]
    assert a.feed(b"9" * (MAX_LINE + 1) + b"\r\n") == [Overlong(MAX_LINE + 1)]
