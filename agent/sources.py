"""Drivers by name, from configuration: ``gps: gpsd | nmea-serial | nmea-file | trace-file``,
``can: python-can | can-log``, ``scanner: serial | scan-file``.

Each driver's module (and its library: pyserial, python-can, cantools, biip) is imported only
when the configuration names it, so a van that has no CAN bus never loads cantools.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, CanConfig, GpsConfig, ScannerConfig
from firmware_bridge.driver import Driver
from firmware_bridge.replay import ReplayDriver
from protocols.errors import ConfigError
from protocols.records import Scan


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{where}: {path}: no such file")
    return path


def gps_driver(c: GpsConfig) -> Driver[Any]:
    if c.driver == "gpsd":
        from firmware_bridge.gps.gpsd_client import GpsdDriver

        return GpsdDriver(host=c.host, port=c.gpsd_port, device=c.gpsd_device or None)
    if c.driver == "nmea-serial":
        from firmware_bridge.gps.serial_nmea import SerialNmeaDriver

        return SerialNmeaDriver(c.port, baudrate=c.baudrate)
    path = _existing(c.path, "gps.path")
    if c.driver == "nmea-file":
        from firmware_bridge.gps.serial_nmea import iter_fixes_from_file

        return ReplayDriver("gps", lambda: iter_fixes_from_file(path), c.replay_interval_s, c.replay_repeat)
    from firmware_bridge.gps.tpv import read_trace

    return ReplayDriver("gps", lambda: read_trace(path), c.replay_interval_s, c.replay_repeat)


def can_driver(c: CanConfig) -> Driver[Any]:
    from firmware_bridge.can.decoder import CanDecoder

    decoder = CanDecoder.from_files(_existing(c.dbc, "can.dbc"), c.mapping or None)
    if c.driver == "python-can":
        from firmware_bridge.can.bus_driver import CanDriver

        return CanDriver(decoder, interface=c.interface, channel=c.channel, bitrate=c.bitrate)
    from firmware_bridge.can.bus_driver import iter_signals_from_log

    path = _existing(c.path, "can.path")
    channels = [c.channel] if c.channel else None  # a DBC describes one bus of a multi-bus log
    return ReplayDriver(
        "can", lambda: iter_signals_from_log(path, decoder, channels=channels), c.replay_interval_s
    )


def scanner_driver(c: ScannerConfig) -> Driver[Any]:
    if c.driver == "serial":
        from firmware_bridge.scanner.serial_scanner import SerialScannerDriver

        return SerialScannerDriver(c.port, baudrate=c.baudrate)
    from firmware_bridge.scanner.serial_scanner import decode_file

    path = _existing(c.path, "scanner.path")
    start = time.time()  # a file has no arrival times: replayed scans arrive one a second from now

    def load() -> Iterator[Scan]:
        for number, scan in decode_file(path, driver.rejects):
            yield dataclasses.replace(scan, time=start + number)

    driver: ReplayDriver[Scan] = ReplayDriver("scanner", load, c.replay_interval_s)
    return driver


def build_drivers(config: AgentConfig) -> list[Driver[Any]]:
    drivers: list[Driver[Any]] = []
    if config.gps:
        drivers.append(gps_driver(config.gps))
    if config.can:
        drivers.append(can_driver(config.can))
    if config.scanner:
        drivers.append(scanner_driver(config.scanner))
    return drivers
