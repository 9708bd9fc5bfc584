"""CAN I/O: a live bus through any python-can interface, and recorded logs, into ``Signal`` readings.

python-can is imported only when a bus other than SocketCAN is opened or a log is read, so an
agent without a CAN bus never loads it, and the van's ``socketcan`` bus is read with the standard
library (:mod:`firmware_bridge.can.socketcan`). Decoding is the pure :class:`CanDecoder`'s job;
this module only moves frames.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from firmware_bridge.can.decoder import CanDecoder
from firmware_bridge.can.log_reader import read_frames
from firmware_bridge.can.socketcan import SocketCanBus
from firmware_bridge.driver import Driver
from protocols.errors import DeviceError
from protocols.records import Signal
from protocols.rejects import Rejects

log = logging.getLogger("dropline.can")


def _usable(message: Any, rejects: Rejects) -> bool:
    if message.is_error_frame:
        rejects.reject("error frame", message)
        return False
    if message.is_remote_frame:
        rejects.reject("remote frame", f"0x{message.arbitration_id:X}")
        return False
    return True


def iter_signals_from_log(
    path: Path, decoder: CanDecoder, *, channels: Collection[str] | None = None
) -> Iterator[Signal]:
    """Every signal of a recorded log, in file order, with the frames' own timestamps.

    ``channels`` keeps only frames whose channel (as text: ``can0`` in candump logs, the ``Bus``
    number in GVRET CSV, python-can's number in ASC) is listed: a DBC describes one bus, and
    multi-bus logs reuse ids with other layouts. Frames on other channels are dropped uncounted.
    """
    rejects = decoder.rejects
    decode = decoder.decode
    for message in read_frames(path, rejects):
        if channels is not None and str(message.channel) not in channels:
            continue
        if _usable(message, rejects):
            yield from decode(message.arbitration_id, message.data, message.timestamp, message.is_extended_id)


class CanDriver(Driver[Signal]):
    """A live CAN bus: ``socketcan``/``can0`` on the van, ``virtual`` in tests, any python-can interface.

    ``socketcan`` is read by our standard-library reader unless ``bus_options`` asks for more than
    it implements (``fd``): then python-can's own ``socketcan`` interface is used.

        The driver shares the decoder's ``rejects``, so bad frames and bus-level rejects add up in one
        place. A bus error (interface down, adapter unplugged) closes the bus and reopens it with backoff.
    """

    kind = "can"

    def __init__(
        self,
        decoder: CanDecoder,
        *,
        interface: str,
        channel: str | int,
        bitrate: int | None = None,
        name: str = "can",
        bus_options: dict[str, Any] | None = None,
        max_batch: int = 512,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        super().__init__(name, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
        self.decoder = decoder
        self.rejects = decoder.rejects
        self.interface = interface
        self.channel = channel
        self.bitrate = bitrate
        self.bus_options = dict(bus_options or {})
        self.max_batch = max_batch
        self.frames = 0
        self._bus: Any = None
        self._bus_errors: tuple[type[Exception], ...] = ()  # the bus library's errors (DeviceError)

    def _open(self) -> None:
        if self.interface == "socketcan" and set(self.bus_options) <= {"fd"}:
            self._bus = SocketCanBus(
                str(self.channel), rejects=self.rejects, fd=bool(self.bus_options.get("fd", False))
            )
            self._bus_errors = ()  # it raises DeviceError itself
            return
        import can

        self._bus_errors = (can.CanError,)
        options = dict(self.bus_options)
        if self.bitrate:
            options["bitrate"] = self.bitrate
        try:
            self._bus = can.Bus(interface=self.interface, channel=self.channel, **options)
        except (can.CanError, ValueError, ImportError, NotImplementedError) as exc:
            raise DeviceError(f"{self.interface}/{self.channel}: {exc}") from exc

    def _read(self, timeout: float) -> Sequence[Signal]:
        bus = self._bus
        out: list[Signal] = []
        try:
            message = bus.recv(timeout)
            n = 0
            while message is not None:
                self.frames += 1
                if _usable(message, self.rejects):
                    out.extend(
                        self.decoder.decode(
                            message.arbitration_id, message.data, message.timestamp, message.is_extended_id
                        )
                    )
                n += 1
                if n >= self.max_batch:
                    break
                message = bus.recv(0)
        except self._bus_errors as exc:
            raise DeviceError(f"{self.interface}/{self.channel}: {exc}") from exc
        return out

    def _close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except Exception as exc:  # must not raise; the bus is going away anyway
                log.debug("%s: shutdown: %s", self.name, exc)
