"""The driver table: ``(section, driver name) -> factory``, from configuration:
``gps: gpsd | nmea-serial | nmea-file | trace-file``, ``can: python-can | can-log``,
``scanner: serial | scan-file`` (the ``choices`` of ``agent/config.py``, checked by a test).

A factory imports its driver's module (and library: pyserial, python-can) only when the
configuration names it; a CAN driver decodes through a table compiled from the DBC by cantools
in a child process, so the agent process never loads cantools. Each factory says
what its readings' times mean (:class:`agent.timebase.Clock`) and, for recorded files, how to
read them in file order for ``dropline replay`` (``recording``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.timebase import Clock
from firmware_bridge.driver import Driver
from protocols.errors import ConfigError
from protocols.records import Fix, Scan, Signal
from protocols.rejects import Rejects

if TYPE_CHECKING:
    from agent.config import AgentConfig, CanConfig, GpsConfig, ScannerConfig

Reading = Fix | Signal | Scan
Recorded = tuple[float | None, int, Reading]


@dataclass(frozen=True)
class Source:
    """One configured input. ``driver()`` builds the live driver; ``recording(rejects)`` (files
    only) yields ``(time, number, reading)`` in file order: the time the file holds (``None`` for
    a scan file's untimed line, which ``agent/replay.py`` lays out by its line ``number``)."""

    section: str
    clock: Clock
    driver: Callable[[], Driver[Any]]
    recording: Callable[[Rejects], Iterator[Recorded]] | None = None


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{where}: {path}: no such file")
    return path


def _timed(readings: Iterator[Fix | Signal]) -> Iterator[Recorded]:
    return ((r.time, n, r) for n, r in enumerate(readings, start=1))


def _gpsd(c: GpsConfig) -> Source:
    def driver() -> Driver[Any]:
        from firmware_bridge.gps.gpsd_client import GpsdDriver

        return GpsdDriver(host=c.host, port=c.gpsd_port, device=c.gpsd_device or None)

    return Source("gps", Clock.GNSS, driver)


def _nmea_serial(c: GpsConfig) -> Source:
    def driver() -> Driver[Any]:
        from firmware_bridge.gps.serial_nmea import SerialNmeaDriver

        return SerialNmeaDriver(c.port, baudrate=c.baudrate)

    return Source("gps", Clock.GNSS, driver)


def _gps_file(c: GpsConfig, read: Callable[[Path, Rejects], Iterator[Fix]]) -> Source:
    path = _existing(c.path, "gps.path")

    def driver() -> Driver[Any]:
        from firmware_bridge.replay import ReplayDriver

        replay: ReplayDriver[Fix] = ReplayDriver(
            "gps", lambda: read(path, replay.rejects), c.replay_interval_s, c.replay_repeat
        )
        return replay

    return Source("gps", Clock.GNSS, driver, lambda rejects: _timed(read(path, rejects)))


def _nmea_file(c: GpsConfig) -> Source:
    def read(path: Path, rejects: Rejects) -> Iterator[Fix]:
        from firmware_bridge.gps.nmea import NmeaDecoder
        from firmware_bridge.gps.serial_nmea import iter_fixes_from_file

        return iter_fixes_from_file(path, NmeaDecoder(rejects))

    return _gps_file(c, read)


def _trace_file(c: GpsConfig) -> Source:
    def read(path: Path, rejects: Rejects) -> Iterator[Fix]:
        from firmware_bridge.gps.tpv import read_trace

        return read_trace(path, rejects)

    return _gps_file(c, read)


def _python_can(c: CanConfig) -> Source:
    dbc = _existing(c.dbc, "can.dbc")

    def driver() -> Driver[Any]:
        from firmware_bridge.can.bus_driver import CanDriver
        from firmware_bridge.can.decoder import CanDecoder

        # The DBC is compiled in a child process: cantools (~20 MB resident) stays out of the agent.
        decoder = CanDecoder.from_table(dbc, c.mapping or None)
        return CanDriver(decoder, interface=c.interface, channel=c.channel, bitrate=c.bitrate)

    return Source("can", Clock.HOST, driver)


def _can_log(c: CanConfig) -> Source:
    dbc = _existing(c.dbc, "can.dbc")
    path = _existing(c.path, "can.path")
    channels = [c.channel] if c.channel else None  # a DBC describes one bus of a multi-bus log

    def signals(rejects: Rejects | None) -> Iterator[Signal]:
        from firmware_bridge.can.bus_driver import iter_signals_from_log
        from firmware_bridge.can.decoder import CanDecoder

        decoder = CanDecoder.from_files(dbc, c.mapping or None)
        if rejects is not None:
            decoder.rejects = rejects
        return iter_signals_from_log(path, decoder, channels=channels)

    def driver() -> Driver[Any]:
        from firmware_bridge.replay import ReplayDriver

        return ReplayDriver("can", lambda: signals(None), c.replay_interval_s)

    # Replayed live, a recording has no host clock of its own: its readings are stamped at arrival.
    return Source("can", Clock.ARRIVAL, driver, lambda rejects: _timed(signals(rejects)))


def _serial_scanner(c: ScannerConfig) -> Source:
    def driver() -> Driver[Any]:
        from firmware_bridge.scanner.serial_scanner import SerialScannerDriver

        return SerialScannerDriver(c.port, baudrate=c.baudrate)

    return Source("scanner", Clock.HOST, driver)


def _scan_file(c: ScannerConfig) -> Source:
    path = _existing(c.path, "scanner.path")

    def recording(rejects: Rejects) -> Iterator[Recorded]:
        from firmware_bridge.replay import read_scan_file

        for line in read_scan_file(path, rejects):
            yield line.time, line.number, line.scan

    def driver() -> Driver[Any]:
        from firmware_bridge.replay import ReplayDriver, read_scan_file

        replay: ReplayDriver[Scan] = ReplayDriver(
            "scanner", lambda: (s.scan for s in read_scan_file(path, replay.rejects)), c.replay_interval_s
        )
        return replay

    return Source("scanner", Clock.ARRIVAL, driver, recording)


DRIVERS: dict[str, dict[str, Callable[[Any], Source]]] = {
    "gps": {
        "gpsd": _gpsd,
        "nmea-serial": _nmea_serial,
        "nmea-file": _nmea_file,
        "trace-file": _trace_file,
    },
    "can": {"python-can": _python_can, "can-log": _can_log},
    "scanner": {"serial": _serial_scanner, "scan-file": _scan_file},
}
"""Section -> driver name -> factory taking that section's configuration."""


def build_sources(config: AgentConfig) -> list[Source]:
    """The configured sources in a fixed order (gps, can, scanner): replay breaks ties this way."""
    out: list[Source] = []
    for section, c in (("gps", config.gps), ("can", config.can), ("scanner", config.scanner)):
        if c is not None:
            out.append(DRIVERS[section][c.driver](c))
    return out
