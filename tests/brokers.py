"""A real Mosquitto on a free loopback port, for tests that need a broker (and can stop it).

``run_mosquitto(tmp_path)`` starts one with a generated config and stops it on exit; the object
it yields unpacks as ``(host, port)`` and can be stopped and started again on the same port, as
an outage test needs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """One broker process: ``start`` (waits until it accepts connections), ``stop``, ``restart``."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_config: str = "", listener: str = ""
    ) -> None:
        """``listener`` replaces the plaintext anonymous listener: e.g. the TLS one that
        ``dropline pki mosquitto-conf`` writes for ``port``."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.config = workdir / f"mosquitto-{self.port}.conf"
        self.log = workdir / f"mosquitto-{self.port}.log"
        lines = [
            *(listener.splitlines() or [f"listener {self.port} {self.host}", "allow_anonymous true"]),
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user `mosquitto`, which may not read the config
        self.config.write_text("\n".join(lines) + "\n" + extra_config)
        self.process: subprocess.Popen[bytes] | None = None

    def __iter__(self) -> Iterator[str | int]:
        return iter((self.host, self.port))

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.process is not None:
            return
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"mosquitto exited at start: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop without a clean shutdown (SIGKILL)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextmanager
def run_mosquitto(
    tmp_path: Path, port: int | None = None, extra_config: str = "", listener: str = ""
) -> Iterator[Mosquitto]:
    """A started broker, stopped on exit; ``host, port = broker`` works."""
    broker = Mosquitto(tmp_path, port, extra_config, listener)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
