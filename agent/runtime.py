"""The imperative shell of the van agent: drivers -> core -> outbox -> uplink.

Drivers run in their own threads and put readings on one queue; this loop is the only caller
of the core and the outbox's writer. It injects time (``Tick``) from the shell's clock once a
second and runs the outbox's group commit. The uplink runs in its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from agent import sources
from agent.config import AgentConfig
from agent.core import Core
from agent.outbox import Outbox
from agent.uplink import Backoff, Transport, Uplink
from protocols.records import Event, Tick

log = logging.getLogger("dropline.agent")


def transport_factory(config: AgentConfig) -> Callable[[], Transport] | None:
    """The configured transport's constructor; its library is imported only here, on demand."""
    up = config.uplink
    if up.transport == "grpc":
        from agent.transport_grpc import GrpcTransport

        return lambda: GrpcTransport(up.target, up.keepalive_s, max_message_bytes=up.batch_bytes * 2 + 4096)
    if up.transport == "mqtt":
        from agent.transport_mqtt import MqttTransport

        return lambda: MqttTransport(up.target, config.vehicle.id, up.keepalive_s, up.window)
    return None


class Agent:
    def __init__(self, config: AgentConfig, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = wall_clock
        ob = config.outbox
        ob.path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(
            ob.path,
            disk_budget_bytes=ob.disk_budget_bytes,
            group_commit_s=ob.group_commit_s,
            retain_acked=ob.retain_acked,
            newest_first=config.uplink.order == "newest-first",
            wall_clock=wall_clock,
        )
        self.core = Core()
        self.events: queue.Queue[Event] = queue.Queue(maxsize=10_000)
        self.drivers = [source.driver() for source in sources.build_sources(config)]
        factory = transport_factory(config)
        up = config.uplink
        self.uplink = (
            Uplink(
                self.outbox,
                factory,
                config.vehicle.id,
                window=up.window,
                batch_records=up.batch_records,
                batch_bytes=up.batch_bytes,
                compress=up.compress,
                ack_timeout_s=up.ack_timeout_s,
                backoff=Backoff(max_s=up.backoff_max_s),
            )
            if factory
            else None
        )
        self.stop_requested = threading.Event()
        self.handled = 0

    def run(self) -> None:
        """Until ``stop_requested``: feed events to the core, persist its records."""
        for driver in self.drivers:
            driver.start(self.events.put)
        if self.uplink:
            self.uplink.start()
        log.info(
            "agent %s running: %d drivers, uplink %s",
            self.config.vehicle.id,
            len(self.drivers),
            self.config.uplink.transport,
        )
        next_tick = self._clock() + 1.0
        try:
            while not self.stop_requested.is_set():
                with contextlib.suppress(queue.Empty):
                    self._handle(self.events.get(timeout=0.1))
                now = self._clock()
                if now >= next_tick:
                    self._handle(Tick(now))
                    next_tick = now + 1.0
                self.outbox.tick()
        finally:
            self.shutdown()

    def _handle(self, event: Event) -> None:
        for record in self.core.handle(event).records:
            self.outbox.append(record)
        self.handled += 1

    def shutdown(self) -> None:
        """Stop the drivers, persist what they delivered, then stop the uplink."""
        for driver in self.drivers:
            driver.stop()
        while True:
            try:
                self._handle(self.events.get_nowait())
            except queue.Empty:
                break
        self.outbox.flush()
        if self.uplink:
            self.uplink.stop()
        self.outbox.close()

    def status(self) -> dict[str, Any]:
        return {
            "handled": self.handled,
            "outbox": vars(self.outbox.stats),
            "uplink": vars(self.uplink.stats) if self.uplink else None,
            "rejects": {d.name: d.rejects.as_dict() for d in self.drivers},
        }
