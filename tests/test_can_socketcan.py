"""The standard-library SocketCAN reader.

Frame layout: every ``can.Message`` python-can's own SocketCAN code packs (``build_can_frame``,
the bytes its bus writes to the kernel) must parse back to the same id, flags and payload, and
arbitrary bytes must never raise. The driver: real kernel sockets carrying whole frames (a
``SOCK_SEQPACKET`` pair: one frame per datagram and kernel receive timestamps, as ``CAN_RAW``
gives them; this machine's kernel has no ``AF_CAN``), decoded through the Kona DBC to values
computed by hand. And the ``socketcan`` path must not import python-can.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import can
import pytest
from can.interfaces.socketcan.socketcan import build_can_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.can.bus_driver import CanDriver
from firmware_bridge.can.decoder import CanDecoder
from firmware_bridge.can.socketcan import SO_TIMESTAMPNS, Frame, SocketCanBus, _timestamp, parse_frame
from protocols.errors import DeviceError
from protocols.rejects import Rejects
from tests.conftest import DATA
from tests.test_can_driver import (
    DASH_FRAME,
    HV_FRAME,
    SOC,
    SOC_DISPLAYED,
    SOC_FRAME,
    VOLTAGE,
    Collected,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
KONA_DBC = DATA / "can" / "kona_ev" / "pcan.dbc"


@st.composite
def messages(draw: st.DrawFn) -> can.Message:
    extended = draw(st.booleans())
    fd = draw(st.booleans())
    remote = not fd and draw(st.booleans())
    arbitration_id = draw(st.integers(0, 0x1FFF_FFFF if extended else 0x7FF))
    if remote:
        return can.Message(
            arbitration_id=arbitration_id,
            is_extended_id=extended,
            is_remote_frame=True,
            dlc=draw(st.integers(0, 8)),
        )
    return can.Message(
        arbitration_id=arbitration_id,
        is_extended_id=extended,
        is_fd=fd,
        is_error_frame=draw(st.booleans()),
        bitrate_switch=fd and draw(st.booleans()),
        data=draw(st.binary(max_size=64 if fd else 8)),
    )


@settings(max_examples=2000, deadline=None)
@given(messages(), st.floats(0, 4e9))
def test_python_cans_frames_parse_back(message: can.Message, timestamp: float) -> None:
    frame = parse_frame(build_can_frame(message), timestamp)
    assert isinstance(frame, Frame)
    assert frame.arbitration_id == message.arbitration_id
    assert frame.is_extended_id == message.is_extended_id
    assert frame.is_remote_frame == message.is_remote_frame
    assert frame.is_error_frame == message.is_error_frame
    assert frame.is_fd == message.is_fd
    assert frame.timestamp == timestamp
    if message.is_remote_frame:
        expected = bytes(message.dlc)
    else:  # CAN FD payloads come in the lengths a DLC can say (12, 16, 20, 24, 32, 48, 64), zero-padded
        expected = bytes(message.data).ljust(can.util.dlc2len(can.util.len2dlc(len(message.data))), b"\0")
    assert frame.data == expected


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80), st.binary(min_size=16, max_size=16), st.binary(min_size=72, max_size=72)
    )
)
def test_any_bytes_parse_or_say_why(raw: bytes) -> None:
    frame = parse_frame(raw, 1.0)
    if len(raw) not in (16, 72):
        assert frame == f"{len(raw)} bytes is no CAN frame"
    elif raw[4] > (8 if len(raw) == 16 else 64):
        assert frame == f"length {raw[4]} > {8 if len(raw) == 16 else 64}"
    else:
        assert isinstance(frame, Frame) and frame.data == raw[8 : 8 + raw[4]]
        can_id = int.from_bytes(raw[:4], sys.byteorder)  # <linux/can.h>: canid_t, host byte order
        extended = bool(can_id >> 31)
        assert frame.is_extended_id == extended
        assert frame.arbitration_id == can_id % (1 << 29 if extended else 1 << 11)


class PairDriver(CanDriver):
    """The CAN driver on our SocketCAN reader, over a socket pair instead of a CAN interface."""

    def __init__(self, decoder: CanDecoder, sock: socket.socket) -> None:
        super().__init__(decoder, interface="socketcan", channel="pair0")
        self.sock = sock

    def _open(self) -> None:
        self._bus = SocketCanBus("pair0", rejects=self.rejects, sock=self.sock)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # what SocketCanBus sets on a CAN socket
    yield ours, theirs
    ours.close()
    theirs.close()


def frame(frame_id: int, data: bytes, **kw: object) -> bytes:
    return build_can_frame(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False, **kw))


def test_driver_decodes_frames_and_counts_garbage_around_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    driver = PairDriver(CanDecoder.from_files(KONA_DBC, "kona_ev"), ours)
    sink = Collected()
    thread = driver.start(sink)
    before = time.time()
    try:
        assert driver.connected.wait(5)
        theirs.send(frame(0x594, SOC_FRAME))
        theirs.send(b"\x00" * 5)  # not a frame
        theirs.send(build_can_frame(can.Message(is_error_frame=True)))
        theirs.send(frame(0x542, DASH_FRAME))
        theirs.send(frame(0x595, HV_FRAME))
        assert wait_for(lambda: len(sink.values(VOLTAGE)) == 1), sink.names()
    finally:
        driver.stop()
    assert not thread.is_alive()
    assert sink.values(SOC) == [49.0 + 0.1]  # hand-computed from the payloads (test_can_driver.py)
    assert sink.values(SOC_DISPLAYED) == [50.5]
    assert sink.values(VOLTAGE) == [360.8]
    assert driver.rejects.as_dict() == {"bad frame": 1, "error frame": 1}
    assert driver.frames == 4
    # the kernel's receive time, not a made-up one
    assert all(before - 1 <= s.time <= time.time() + 1 for s in sink.items)


def test_a_closed_socket_is_a_device_error(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    bus = SocketCanBus("pair0", rejects=Rejects("can"), sock=ours)
    assert bus.recv(0) is None
    theirs.close()
    with pytest.raises(DeviceError, match="pair0"):
        bus.recv(1.0)


def test_socketcan_path_does_not_import_python_can() -> None:
    """In a fresh interpreter: open ``socketcan`` on an interface that is not there (or without
    AF_CAN at all): a DeviceError naming it, and python-can never imported. (The decoder gets an
    empty database: a DBC loaded by cantools imports python-can itself, see bench/memory.py.)"""
    code = (
        "import sys, types\n"
        "from firmware_bridge.can.bus_driver import CanDriver\n"
        "from firmware_bridge.can.decoder import CanDecoder\n"
        "from protocols.errors import DeviceError\n"
        "decoder = CanDecoder(types.SimpleNamespace(messages=[]))\n"
        "d = CanDriver(decoder, interface='socketcan', channel='nocan9')\n"
        "try:\n"
        "    d._open()\n"
        "except DeviceError as exc:\n"
        "    assert 'nocan9' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('opened a CAN interface that does not exist')\n"
        "sys.exit('can' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_receive_time_is_the_kernels(pair: tuple[socket.socket, socket.socket]) -> None:
    """The time comes from the SO_TIMESTAMPNS message the kernel attaches, to the nanosecond."""
    ours, theirs = pair
    theirs.send(frame(0x594, SOC_FRAME))
    _raw, ancillary, _flags, _addr = ours.recvmsg(72, socket.CMSG_SPACE(16))
    [(level, kind, data)] = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)
    seconds, nanoseconds = int.from_bytes(data[:8], sys.byteorder), int.from_bytes(data[8:16], sys.byteorder)
    assert _timestamp(ancillary) == seconds + nanoseconds * 1e-9
    assert _timestamp([]) > seconds  # none attached: the time now
