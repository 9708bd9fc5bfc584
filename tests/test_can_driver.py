"""The CAN driver on python-can's real ``virtual`` bus: frames sent by another bus handle come out as
signals, garbage frames between them are counted, and the bus is released when the driver stops."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import can
import pytest

from firmware_bridge.can.bus_driver import CanDriver
from firmware_bridge.can.decoder import CanDecoder
from protocols.records import Signal
from tests.conftest import DATA

KONA_DBC = DATA / "can" / "kona_ev" / "pcan.dbc"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
SOC_DISPLAYED = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
VOLTAGE = "Vehicle.Powertrain.TractionBattery.CurrentVoltage"

# real payloads from bms_bench_2021_64kwh_idle.asc
SOC_FRAME = bytes.fromhex("34213421a0620120")  # 0x594: 49.0 + 0.1 %
DASH_FRAME = bytes.fromhex("650a00000000ffff")  # 0x542: 50.5 %
HV_FRAME = bytes.fromhex("0b00b8b80000180e")  # 0x595: 360.8 V, 0 A


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class Collected:
    """A thread-safe sink."""

    def __init__(self) -> None:
        self.items: list[Signal] = []
        self._lock = threading.Lock()

    def __call__(self, signal: Signal) -> None:
        with self._lock:
            self.items.append(signal)

    def names(self) -> list[str]:
        with self._lock:
            return [s.name for s in self.items]

    def values(self, name: str) -> list[float]:
        with self._lock:
            return [s.value for s in self.items if s.name == name]


@pytest.fixture
def channel() -> str:
    return f"dropline-test-{uuid.uuid4().hex}"


@pytest.fixture
def sender(channel: str) -> Iterator[Any]:
    bus = can.Bus(interface="virtual", channel=channel)
    yield bus
    bus.shutdown()


@pytest.fixture
def running(channel: str) -> Iterator[tuple[CanDriver, Collected]]:
    decoder = CanDecoder.from_files(KONA_DBC, "kona_ev")
    driver = CanDriver(decoder, interface="virtual", channel=channel, bitrate=500_000)
    sink = Collected()
    thread = driver.start(sink)
    assert driver.connected.wait(5), "virtual bus did not open"
    yield driver, sink
    driver.stop()
    assert not thread.is_alive(), "driver thread leaked"
    assert driver._bus is None, "bus not shut down"


def send(bus: Any, frame_id: int, data: bytes, **kw: Any) -> None:
    bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False, **kw))


def test_frames_from_another_handle_come_out_as_signals(
    running: tuple[CanDriver, Collected], sender: Any
) -> None:
    driver, sink = running
    send(sender, 0x594, SOC_FRAME)
    send(sender, 0x542, DASH_FRAME)
    send(sender, 0x595, HV_FRAME)
    assert wait_for(lambda: len(sink.names()) >= 4), sink.names()
    assert sink.values(SOC) == [49.0 + 0.1]
    assert sink.values(SOC_DISPLAYED) == [50.5]
    assert sink.values(VOLTAGE) == [360.8]
    assert driver.frames == 3 and driver.rejects.total == 0


def test_garbage_frames_are_counted_and_good_frames_around_them_decoded(
    running: tuple[CanDriver, Collected], sender: Any
) -> None:
    driver, sink = running
    send(sender, 0x594, SOC_FRAME)
    send(sender, 0x594, SOC_FRAME[:3])  # wrong length
    send(sender, 0x7E4, b"\x02\x3e\x00")  # unknown id (UDS TesterPresent)
    send(sender, 0x542, b"\xff" * 8, is_remote_frame=False)
    sender.send(can.Message(arbitration_id=0x594, is_remote_frame=True, dlc=8, is_extended_id=False))
    sender.send(can.Message(is_error_frame=True))
    sender.send(can.Message(arbitration_id=0x594, data=SOC_FRAME, is_extended_id=True))  # 29-bit: another id
    send(sender, 0x594, bytes.fromhex("34213421a0640120"))  # SoC_Maybe 50.0
    assert wait_for(lambda: driver.frames == 8), driver.frames
    assert wait_for(lambda: len(sink.values(SOC)) == 2)
    assert sink.values(SOC) == [49.0 + 0.1, 50.0 + 0.1]
    assert sink.values(SOC_DISPLAYED) == [127.5]  # 0xFF * 0.5: a legal payload, whatever it means
    assert driver.rejects.as_dict() == {
        "wrong length": 1,
        "unknown id": 2,
        "remote frame": 1,
        "error frame": 1,
    }


def test_a_missing_interface_is_retried_not_raised() -> None:
    decoder = CanDecoder.from_files(KONA_DBC, "kona_ev")
    driver = CanDriver(decoder, interface="no-such-interface", channel="x", backoff_initial_s=0.01)
    thread = driver.start(lambda s: None)
    time.sleep(0.2)
    assert thread.is_alive() and not driver.connected.is_set()
    driver.stop()
    assert not thread.is_alive()


def test_bad_timestamps_from_the_bus_are_counted_and_the_driver_goes_on(
    running: tuple[CanDriver, Collected], channel: str
) -> None:
    """A bus (or its driver) that stamps frames NaN, infinite, negative or absurdly late: counted, skipped."""
    driver, sink = running
    stamping = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    try:
        for t in (float("nan"), 1e300, float("inf"), -1.0, 1_700_000_000.5):
            stamping.send(
                can.Message(timestamp=t, arbitration_id=0x594, data=SOC_FRAME, is_extended_id=False)
            )
        assert wait_for(lambda: driver.frames == 5), driver.frames
        assert wait_for(lambda: len(sink.items) == 1)
    finally:
        stamping.shutdown()
    assert [(s.time, s.name, s.value) for s in sink.items] == [(1_700_000_000.5, SOC, 49.0 + 0.1)]
    assert driver.rejects.as_dict() == {"bad timestamp": 4}
    assert driver._thread is not None and driver._thread.is_alive()
