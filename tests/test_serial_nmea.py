"""The serial NMEA driver against a real pseudo-terminal pair (socat) standing in for a USB
receiver: a real log goes in one end, fixes come out of the driver; then the device vanishes
(socat killed: the port read fails and the path disappears) and comes back, and fixes flow again
without anyone restarting the driver."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.gps.serial_nmea import SerialNmeaDriver, iter_fixes_from_file
from firmware_bridge.gps.timebase import GPS_EPOCH
from protocols.records import Fix
from tests.conftest import DATA

LOGS = DATA / "nmea" / "gpsd"


class Receiver:
    """socat joining two ptys: ``device`` is what the driver opens, ``feed`` where we write."""

    def __init__(self, directory: Path) -> None:
        self.device = directory / "gps0"
        self.feed = directory / "feed"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "socat",
                f"pty,raw,echo=0,link={self.device}",
                f"pty,raw,echo=0,link={self.feed}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.device.exists() and self.feed.exists()):
            assert time.monotonic() < deadline, "socat did not create its ptys"
            time.sleep(0.02)

    def write(self, data: bytes) -> None:
        fd = os.open(self.feed, os.O_WRONLY | os.O_NOCTTY)
        try:
            for i in range(0, len(data), 512):
                os.write(fd, data[i : i + 512])
        finally:
            os.close(fd)

    def vanish(self) -> None:
        """Kill socat outright, as yanking the USB plug does: no goodbye, links left dangling."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        for link in (self.device, self.feed):
            link.unlink(missing_ok=True)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rx = Receiver(tmp_path)
    rx.start()
    yield rx
    rx.vanish()


def _collect(out: queue.Queue[Fix], n: int, timeout: float) -> list[Fix]:
    got: list[Fix] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            got.append(out.get(timeout=0.1))
    return got


def test_fixes_flow_survive_unplug_and_replug(receiver: Receiver) -> None:
    first, second = LOGS / "nmea-rtk.log", LOGS / "firefly-II.log"
    want_first = list(iter_fixes_from_file(first))
    want_second = list(iter_fixes_from_file(second))
    out: queue.Queue[Fix] = queue.Queue()
    # a 2020 capture played into the port: dated before this build, so the floor is the GPS epoch
    driver = SerialNmeaDriver(
        str(receiver.device), 115200, floor=GPS_EPOCH, backoff_initial_s=0.05, backoff_max_s=0.3
    )
    driver.start(out.put)
    try:
        assert driver.connected.wait(10)
        receiver.write(first.read_bytes())
        got = _collect(out, len(want_first) - 1, 20)
        # all but the last epoch, which stays open until the next epoch or the end of the stream
        assert got == want_first[:-1]

        receiver.vanish()
        # the epoch in progress is a fix as soon as the device is gone
        assert _collect(out, 1, 10) == want_first[-1:]
        deadline = time.monotonic() + 10
        while driver.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not driver.connected.is_set() and driver.reconnects == 1

        receiver.start()
        assert driver.connected.wait(10)
        receiver.write(second.read_bytes())
        got = _collect(out, len(want_second) - 1, 20)
        assert got == want_second[:-1]
    finally:
        driver.stop()
    assert _collect(out, 1, 2) == want_second[-1:]  # stopping ends the stream: last epoch out
    assert driver.rejects.counts["bad_checksum"] == 23  # firefly's GGAs, as in the file
    assert out.empty()


def test_port_that_is_not_there_is_retried_not_fatal(tmp_path: Path) -> None:
    driver = SerialNmeaDriver(str(tmp_path / "nothing"), backoff_initial_s=0.05, backoff_max_s=0.1)
    driver.start(lambda fix: None)
    time.sleep(0.4)
    assert not driver.connected.is_set()
    driver.stop()
    assert driver._thread is not None and not driver._thread.is_alive()
