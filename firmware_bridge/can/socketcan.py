"""Linux SocketCAN with the standard library only (``socket.AF_CAN``, ``struct``): the van's live bus.

python-can's ``socketcan`` interface does the same job, but ``import can`` loads asyncio and ssl
(+16 MB resident on the van); this reader is what :class:`~firmware_bridge.can.bus_driver.CanDriver`
uses when the interface is ``socketcan``. It follows the kernel's ``struct can_frame`` /
``struct canfd_frame`` (``<linux/can.h>``) and python-can's choices: a raw socket bound to one
interface, error frames enabled (so the driver counts them), receive timestamps from the kernel
(``SO_TIMESTAMPNS``, seconds since the Unix epoch), CAN FD frames only if ``fd`` is asked for.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass

from protocols.errors import DeviceError
from protocols.rejects import Rejects

CAN_EFF_FLAG = 0x8000_0000  # extended frame format (29-bit id)
CAN_RTR_FLAG = 0x4000_0000  # remote transmission request
CAN_ERR_FLAG = 0x2000_0000  # error message frame
CAN_EFF_MASK = 0x1FFF_FFFF
CAN_SFF_MASK = 0x7FF
CAN_ERR_MASK = 0x1FFF_FFFF  # every error class (CAN_RAW_ERR_FILTER)
CAN_MTU = 16  # sizeof(struct can_frame)
CANFD_MTU = 72  # sizeof(struct canfd_frame)
CAN_MAX_DLEN = 8
CANFD_MAX_DLEN = 64
SOL_CAN_RAW = 101  # SOL_CAN_BASE + CAN_RAW
CAN_RAW_ERR_FILTER = 2
CAN_RAW_FD_FRAMES = 5
SO_TIMESTAMPNS = 35

_HEADER = struct.Struct("=IB3x")  # can_id, len (can_dlc), then __pad/flags, __res0, len8_dlc/__res1
_TIMESPEC = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec (native longs)
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


@dataclass(frozen=True, slots=True)
class Frame:
    """One received frame, with the attribute names of ``can.Message`` the driver reads."""

    arbitration_id: int
    data: bytes
    timestamp: float
    is_extended_id: bool
    is_remote_frame: bool
    is_error_frame: bool
    is_fd: bool


def parse_frame(raw: bytes, timestamp: float) -> Frame | str:
    """The frame in ``raw`` (a whole ``can_frame`` or ``canfd_frame``), or why it is not one.

    The id keeps 29 bits for extended frames and 11 for standard ones; the payload is the first
    ``len`` bytes after the 8-byte header (``len`` at most 8, or 64 for CAN FD)."""
    if len(raw) == CAN_MTU:
        limit, fd = CAN_MAX_DLEN, False
    elif len(raw) == CANFD_MTU:
        limit, fd = CANFD_MAX_DLEN, True
    else:
        return f"{len(raw)} bytes is no CAN frame"
    can_id, length = _HEADER.unpack_from(raw)
    if length > limit:
        return f"length {length} > {limit}"
    extended = bool(can_id & CAN_EFF_FLAG)
    return Frame(
        arbitration_id=can_id & (CAN_EFF_MASK if extended else CAN_SFF_MASK),
        data=raw[8 : 8 + length],
        timestamp=timestamp,
        is_extended_id=extended,
        is_remote_frame=bool(can_id & CAN_RTR_FLAG),
        is_error_frame=bool(can_id & CAN_ERR_FLAG),
        is_fd=fd,
    )


def _timestamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time, or the time now if the socket gave none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds * 1e-9)
    return time.time()


class SocketCanBus:
    """A raw CAN socket on one interface (``can0``). ``recv`` returns one frame or ``None``.

    ``sock`` is for a socket opened elsewhere (it must deliver one frame per datagram, as a
    ``CAN_RAW`` socket does); without it the interface ``channel`` is opened. An interface that
    is missing or down raises :class:`DeviceError`; so does a receive error (the bus went away).
    Datagrams that are not frames are counted in ``rejects`` and skipped.
    """

    def __init__(
        self, channel: str, *, rejects: Rejects, fd: bool = False, sock: socket.socket | None = None
    ) -> None:
        self.channel = channel
        self.rejects = rejects
        if sock is None:
            sock = self._open(channel, fd)
        self._sock = sock

    @staticmethod
    def _open(channel: str, fd: bool) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
        except (OSError, AttributeError) as exc:  # AttributeError: a Python built without AF_CAN
            raise DeviceError(f"socketcan/{channel}: no SocketCAN here: {exc}") from exc
        try:
            sock.setsockopt(SOL_CAN_RAW, CAN_RAW_ERR_FILTER, CAN_ERR_MASK)
            if fd:
                sock.setsockopt(SOL_CAN_RAW, CAN_RAW_FD_FRAMES, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((channel,))
        except OSError as exc:
            sock.close()
            raise DeviceError(f"socketcan/{channel}: {exc}") from exc
        return sock

    def recv(self, timeout: float) -> Frame | None:
        """The next frame, waiting at most ``timeout`` s (0: only one already there); None if none."""
        sock = self._sock
        try:
            while True:
                ready, _, _ = select.select((sock,), (), (), timeout)
                if not ready:
                    return None
                raw, ancillary, _flags, _address = sock.recvmsg(CANFD_MTU, _ANCILLARY)
                if not raw:  # the peer of a test socket closed it
                    raise DeviceError(f"socketcan/{self.channel}: closed")
                frame = parse_frame(raw, _timestamp(ancillary))
                if isinstance(frame, Frame):
                    return frame
                self.rejects.reject("bad frame", f"{self.channel}: {frame}")
                timeout = 0.0
        except OSError as exc:  # ENETDOWN, ENODEV: the interface went down or away
            raise DeviceError(f"socketcan/{self.channel}: {exc}") from exc

    def shutdown(self) -> None:
        """Close the socket (the name python-can's buses use)."""
        self._sock.close()
