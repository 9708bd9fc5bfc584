"""The imperative shell of the van agent: drivers -> time base -> reorder window -> core ->
outbox -> uplink.

Drivers run in their own threads and hand readings over with their arrival times (monotonic and
wall clock, read together). This loop is the only caller of the core and the outbox's writer: it
puts every reading on GNSS time (``agent/timebase.py``), holds it in a reorder window of
``REORDER_S`` seconds of corrected time (``agent/reorder.py``) and releases it to the core in
event-time order. Once a second it injects a ``Tick`` at the window's horizon on the corrected
clock, so timers ("GPS lost") fire when nothing arrives; before the first fix there is no
corrected clock and no tick. Ticks (one per GNSS second) and the window follow GNSS time at its
measured rate, so a simulated day played faster than real time gives the core the same events as
at real speed. Effects the core asks for run on a worker (``agent/effects.py``); their results,
downlink documents and driver restarts come back as events like readings.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import sources
from agent.config import AgentConfig, UplinkConfig
from agent.core import Core, default_stages
from agent.effects import HANDLERS, EffectRunner, Handler
from agent.events import CoreEvent, Document, DriverRestarted, EffectResult, Quarantined
from agent.outbox import Outbox
from agent.reorder import ReorderWindow
from agent.stages.geofence import GeofenceStage
from agent.systemd import Notifier
from agent.timebase import Arrival, Clock, TimeBase
from agent.uplink import Backoff, Transport, Uplink
from protocols.errors import ConfigError, InputError
from protocols.records import DocumentStatus, Tick
from protocols.tls import TlsFiles

if TYPE_CHECKING:
    from agent.photos import PhotoIntake
    from agent.stages.documents import DocumentStage

log = logging.getLogger("dropline.agent")

REORDER_S = 0.5

STOP_DRAIN_S = 3.0
"""On SIGTERM, how long a connected uplink may take to send what the shutdown just flushed."""
"""How long (corrected time) an event waits for earlier ones from slower driver threads."""


def uplink_tls(up: UplinkConfig) -> TlsFiles | None:
    """The van's mutual TLS files, or None for plaintext, which only ``insecure_local_test``
    allows: a van must not send its records, or take documents, over a link anyone can read."""
    files = (up.tls_ca, up.tls_cert, up.tls_key)
    if all(files):
        tls = TlsFiles(Path(up.tls_ca), Path(up.tls_cert), Path(up.tls_key))
        tls.read()
        return tls
    if any(files):
        raise ConfigError("uplink.tls_ca, uplink.tls_cert and uplink.tls_key go together: give all three")
    if up.insecure_local_test:
        log.warning("uplink: plaintext to %s (insecure_local_test)", up.target)
        return None
    raise ConfigError(
        "uplink: plaintext to the collector is refused: give uplink.tls_ca, tls_cert and tls_key "
        "(dropline pki), or set uplink.insecure_local_test = true for a local test"
    )


def transport_factory(config: AgentConfig) -> Callable[[], Transport] | None:
    """The configured transport's constructor; its library is imported only here, on demand."""
    up = config.uplink
    if up.transport == "none":
        return None
    tls = uplink_tls(up)
    if up.transport == "grpc":
        from agent.transport_grpc import GrpcTransport

        return lambda: GrpcTransport(
            up.target, up.keepalive_s, max_message_bytes=up.batch_bytes * 2 + 4096, tls=tls
        )
    from agent.transport_mqtt import MqttTransport

    return lambda: MqttTransport(up.target, config.vehicle.id, up.keepalive_s, up.window, tls=tls)


LOCAL_ONLY = ("vehicle", "outbox", "documents")
"""Sections a signed configuration never replaces: who the van is, where its data and its
accepted documents live, and whose signatures it believes."""
LOCAL_UPLINK = ("tls_ca", "tls_cert", "tls_key", "insecure_local_test")
"""Uplink settings a signed configuration never replaces: it cannot turn TLS off."""


def with_config_in_force(config: AgentConfig) -> AgentConfig:
    """``config`` with the accepted signed configuration (``documents/config.envelope``) laid
    over it: each section the document names replaces the local one whole, except
    :data:`LOCAL_ONLY` and :data:`LOCAL_UPLINK`. The envelope is checked again (signature and
    vehicle; it was fully checked when accepted); one that no longer checks is logged and ignored,
    so the local file stays in force."""
    if not config.documents.trusted_keys:
        return config
    from agent.config import build
    from agent.documents import DocumentStore, load_trust
    from protocols import envelope

    data = DocumentStore(config.outbox.path.parent / "documents").in_force("config")
    if data is None:
        return config
    try:
        doc = envelope.open_envelope(data, load_trust(Path(config.documents.trusted_keys), 1))
        raw = tomllib.loads(doc.body.decode("utf-8"))
        raw["vehicle"] = {"id": config.vehicle.id}
        if doc.kind != "config" or doc.vehicle not in (None, config.vehicle.id):
            raise envelope.EnvelopeError("wrong_vehicle", str(doc.vehicle))
        signed = build(AgentConfig, raw, "signed configuration")
    except (InputError, ValueError) as exc:
        log.error("signed configuration in force ignored (%s): the local file applies", exc)
        return config
    sections = {name: getattr(signed, name) for name in raw if name not in LOCAL_ONLY}
    if "uplink" in sections:
        keep = {name: getattr(config.uplink, name) for name in LOCAL_UPLINK}
        sections["uplink"] = dataclasses.replace(sections["uplink"], **keep)
    log.info("signed configuration version %d in force: %s", doc.version, ", ".join(sorted(sections)))
    return dataclasses.replace(config, **sections)


class Agent:
    """The live van. ``core`` and ``effect_handlers`` default to the van's own; tests pass theirs.
    ``wall_clock`` and ``mono_clock`` are read only here (and by the outbox), never in the core."""

    def __init__(
        self,
        config: AgentConfig,
        wall_clock: Callable[[], float] = time.time,
        *,
        mono_clock: Callable[[], float] = time.monotonic,
        core: Core | None = None,
        effect_handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        config = with_config_in_force(config)
        self.config = config
        self._clock = wall_clock
        self._mono = mono_clock
        ob = config.outbox
        self.outbox = Outbox(
            ob.path,
            disk_budget_bytes=ob.disk_budget_bytes,
            group_commit_s=ob.group_commit_s,
            retain_acked=ob.retain_acked,
            newest_first=config.uplink.order == "newest-first",
            wall_clock=wall_clock,
        )
        self.core = (
            core
            if core is not None
            else Core(default_stages(route=config.route, compaction=config.compaction, eta=config.eta))
        )
        route = config.route
        self._manifest = route.manifest.read_bytes() if route.manifest != Path("") else None
        """The ``[route] manifest`` file, until it enters the core with the first released event."""
        self.inbox: queue.Queue[tuple[CoreEvent, Clock, Arrival]] = queue.Queue(maxsize=10_000)
        self.timebase: TimeBase[CoreEvent] = TimeBase()
        self.window: ReorderWindow[CoreEvent] = ReorderWindow(REORDER_S)
        self.sources = sources.build_sources(config)
        self.drivers = [source.driver() for source in self.sources]
        handlers = dict(HANDLERS if effect_handlers is None else effect_handlers)
        self.document_stage: DocumentStage | None = None
        if config.documents.trusted_keys:  # the document modules are loaded only then
            from agent.documents import APPLY, DocumentStore, load_trust
            from agent.stages.documents import DocumentStage

            store = DocumentStore(ob.path.parent / "documents")
            trust = load_trust(Path(config.documents.trusted_keys), 1)
            vehicle = config.vehicle.id
            stages = self.core.stages
            geofence = next((s for s in stages if isinstance(s, GeofenceStage)), None)
            self.document_stage = DocumentStage(
                trust, vehicle, config.documents.fleet, store.highest(), geofence=geofence
            )
            # before the geofence stage: an applied manifest is in force for the same event
            at = stages.index(geofence) if geofence is not None else len(stages)
            stages.insert(at, self.document_stage)
            handlers[APPLY] = store.handle_effect
        self.photos: PhotoIntake | None = None
        """Photos and signatures from the handheld, straight into the outbox (not via the core);
        its module (an HTTP server) is loaded only when the configuration asks for it."""
        if config.photos.inbox != Path("") or config.photos.listen:
            from agent.photos import PhotoIntake

            self.photos = PhotoIntake(config.photos, self.outbox, wall_clock)
        self.effects = EffectRunner(handlers, lambda r: self._arrive(Clock.ARRIVAL, r))
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
                on_document=lambda d: self.submit_document(d.kind, d.envelope),
                on_quarantined=lambda f, t, why: self._arrive(Clock.ARRIVAL, Quarantined(0.0, f, t, why)),
            )
            if factory
            else None
        )
        self.stop_requested = threading.Event()
        self.handled = 0
        self.notifier = Notifier()
        """systemd's notify socket: READY=1 once drivers and outbox are up, WATCHDOG=1 from the loop."""

    def run(self) -> None:
        """Until ``stop_requested``: feed events to the core in event-time order, persist its records."""
        for source, driver in zip(self.sources, self.drivers, strict=True):
            driver.on_restart = self._driver_restarted
            driver.start(functools.partial(self._arrive, source.clock))
        self.effects.start()
        if self.photos:
            self.photos.start()
        if self.uplink:
            self.uplink.start()
        log.info(
            "agent %s running: %d drivers, uplink %s",
            self.config.vehicle.id,
            len(self.drivers),
            self.config.uplink.transport,
        )
        self.notifier.notify("READY=1")
        next_watchdog = self._mono() + 1.0
        next_tick_gnss = float("-inf")  # a tick each GNSS second
        try:
            while not self.stop_requested.is_set():
                try:
                    self._place(self.inbox.get(timeout=0.1))
                    for _ in range(256):  # take what else is waiting before releasing
                        self._place(self.inbox.get_nowait())
                except queue.Empty:
                    pass
                mono = self._mono()
                now = self.timebase.now(mono)
                if now is not None:
                    # REORDER_S is drivers' latency, host seconds: on GNSS time it is scaled by
                    # the rate (1 on a van, the scale in a faster-than-real-time simulation).
                    self.window.window_s = REORDER_S * self.timebase.rate
                    for event in self.window.release(now):
                        self._handle(event)
                    if now >= next_tick_gnss or now < next_tick_gnss - 2.0:  # due, or time went back
                        self._handle(Tick(now - self.window.window_s))
                        next_tick_gnss = now + 1.0
                self.outbox.tick()
                if self.notifier.watchdog_s is not None and mono >= next_watchdog:
                    self.notifier.notify("WATCHDOG=1")  # the loop turns: events flow, outbox commits
                    next_watchdog = mono + self.notifier.watchdog_s
        finally:
            self.shutdown()

    def submit_document(self, kind: str, body: bytes) -> None:
        """A downlink document (a signed envelope) received, on any thread: it reaches the core as
        an event (``agent.stages.documents.downlink``), never the geofence stage unchecked."""
        from agent.stages.documents import downlink

        self._arrive(Clock.ARRIVAL, downlink(kind, body))

    def _arrive(self, clock: Clock, event: CoreEvent) -> None:
        self.inbox.put((event, clock, Arrival(self._mono(), self._clock())))

    def _driver_restarted(self, name: str, exc: BaseException, restarts: int) -> None:
        self._arrive(Clock.ARRIVAL, DriverRestarted(0.0, name, f"{type(exc).__name__}: {exc}", restarts))

    def _place(self, item: tuple[CoreEvent, Clock, Arrival]) -> None:
        event, clock, arrival = item
        if isinstance(event, Document | EffectResult):  # not readings: no wait for the first fix
            event = dataclasses.replace(event, time=self.timebase.best_now(arrival))
            if self.timebase.offset is None:  # nothing is in the window yet: straight in
                self._manifest_file(event.time)
                self._handle(event)
            else:  # on the corrected clock: in order with the readings around it
                self._release([event])
            return
        self._release(self.timebase.place(event, clock, arrival))

    def _manifest_file(self, t: float) -> None:
        """The ``[route] manifest`` file enters the core once, before anything else, at ``t``."""
        if self._manifest is not None:
            self._handle(Document(t, "manifest", self._manifest))
            self._manifest = None

    def _release(self, events: list[CoreEvent]) -> None:
        """Events on corrected time into the reorder window (the manifest file first)."""
        if events:
            self._manifest_file(min(e.time for e in events))
        for event in events:
            for early in self.window.push(event):
                self._handle(early)

    def _handle(self, event: CoreEvent) -> None:
        out = self.core.handle(event)
        for record in out.records:
            self.outbox.append(record)
            if isinstance(record, DocumentStatus) and record.applied and record.document == "config":
                log.info(
                    "configuration version %d written; it applies at the next restart (nothing "
                    "of it is applied live)",
                    record.version,
                )
        for effect in out.effects:
            self.effects.submit(effect)
        self.handled += 1

    def shutdown(self) -> None:
        """Stop the drivers and effects, persist everything they delivered, then stop the uplink.
        Readings still waiting for a first fix are stamped on the wall clock: the best left."""
        self.notifier.notify("STOPPING=1")
        for driver in self.drivers:
            driver.stop()
        if self.photos:
            self.photos.stop()
        self.effects.stop()
        while True:
            try:
                self._place(self.inbox.get_nowait())
            except queue.Empty:
                break
        self._release(self.timebase.flush(self._clock() - self._mono()))
        for event in self.window.drain():
            self._handle(event)
        self.outbox.flush()
        if self.uplink:
            self.uplink.stop(drain_s=STOP_DRAIN_S)
        self.outbox.close()

    def status(self) -> dict[str, Any]:
        return {
            "handled": self.handled,
            "late_events": self.window.late,
            "timebase": {
                "offset": self.timebase.offset,
                "rate": self.timebase.rate,
                "refused_rates": self.timebase.refused_rates,
                "suspect_stamps": self.timebase.suspect_stamps,
                "dropped_unsynced": self.timebase.dropped_unsynced,
            },
            "outbox": vars(self.outbox.stats),
            "uplink": vars(self.uplink.stats) if self.uplink else None,
            "rejects": {d.name: d.rejects.as_dict() for d in self.drivers},
            "restarts": {d.name: d.restarts for d in self.drivers},
            "documents": self.document_stage.in_force if self.document_stage else None,
        }
