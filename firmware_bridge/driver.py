"""The base every device driver builds on: it owns the read loop, reconnects and counters.

A driver implements three small methods: ``_open`` (connect to the device), ``_read`` (block up
to ``timeout`` seconds and return the readings that arrived, possibly none) and ``_close``. Any
``DeviceError`` (or ``OSError``) from them means the device went away: the loop closes it,
waits with exponential backoff and opens it again, for as long as the driver runs. Readings go to
a sink, a plain callable, from the driver's own thread.

Any other exception escaping the read loop is a bug, not a device fault; it must not leave the
van without the device either: the loop logs it with its traceback, counts it in ``restarts``,
tells ``on_restart`` (the shell records it) and starts over with the same backoff.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from protocols.errors import DeviceError
from protocols.rejects import Rejects

T = TypeVar("T")
Sink = Callable[[T], None]
RestartHook = Callable[[str, BaseException, int], None]
"""``(driver name, the exception, restarts so far)``, called from the driver's thread."""

log = logging.getLogger("dropline.driver")


class Driver(ABC, Generic[T]):
    """A device read in its own thread, reconnecting by itself, counting what it rejects."""

    kind = "device"

    def __init__(self, name: str, *, backoff_initial_s: float = 0.2, backoff_max_s: float = 5.0) -> None:
        self.name = name
        self.rejects = Rejects(name)
        self.reconnects = 0
        self.restarts = 0
        self.on_restart: RestartHook | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s

    @abstractmethod
    def _open(self) -> None:
        """Connect to the device; raise DeviceError (or OSError) if it is not there."""

    @abstractmethod
    def _read(self, timeout: float) -> Sequence[T]:
        """Wait at most ``timeout`` s; return the readings decoded since the last call."""

    @abstractmethod
    def _close(self) -> None:
        """Release the device; must not raise."""

    def _flush(self) -> Sequence[T]:
        """Readings still held when the stream ends (an epoch in progress); none by default."""
        return ()

    def run(self, sink: Sink[T]) -> None:
        """The read loop; returns only after :meth:`stop`."""
        delay = self._backoff_initial
        while not self._stop.is_set():
            try:
                self._session(sink)
                delay = self._backoff_initial
            except (DeviceError, OSError) as exc:
                log.info("%s: cannot open (%s); retrying in %.1f s", self.name, exc, delay)
            except Exception as exc:
                self.restarts += 1
                log.exception("%s: driver failed (restart %d); restarting", self.name, self.restarts)
                if self.on_restart is not None:
                    self.on_restart(self.name, exc, self.restarts)
            else:
                continue
            self._stop.wait(delay)
            delay = min(delay * 2, self._backoff_max)

    def _session(self, sink: Sink[T]) -> None:
        """Open, read until stopped or the device goes away, close. A device lost after opening
        returns normally (reconnect at once); a failure to open and any bug propagate."""
        self._open()
        self.connected.set()
        try:
            while not self._stop.is_set():
                for reading in self._read(0.2):
                    sink(reading)
        except (DeviceError, OSError) as exc:
            log.warning("%s: device lost (%s); reconnecting", self.name, exc)
            self.reconnects += 1
        finally:
            self.connected.clear()
            try:
                for reading in self._flush():
                    sink(reading)
            finally:
                self._close()

    def start(self, sink: Sink[T]) -> threading.Thread:
        self._thread = threading.Thread(
            target=self.run, args=(sink,), name=f"driver-{self.name}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
