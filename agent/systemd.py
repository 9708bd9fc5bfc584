"""systemd's service notification protocol (sd_notify(3)), without a library: a datagram on the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``.

The agent sends ``READY=1`` once its drivers and outbox are up (``Type=notify``), ``WATCHDOG=1``
from its core loop (``WatchdogSec``: a loop that stops turning gets the service restarted), and
``STOPPING=1`` when it starts to flush. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a
no-op; a failed send is logged once and never stops the agent.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("dropline.systemd")


class Notifier:
    """Where to tell systemd about the service. ``environ`` is read once, at construction."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@" and addressed with a leading NUL.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 and mine else None
        """How often to ping: half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises; None if off."""
        self._failed = False

    def notify(self, state: str) -> bool:
        """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``); True if sent."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._failed = True
            return False
        return True
