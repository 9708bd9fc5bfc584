"""MQTT ingest: every van's ``dropline/v1/<vehicle>/telemetry`` batches in, Acks out on
``dropline/v1/<vehicle>/ack``.

Why it is built this way:

* The broker's PUBACK is sent by hand (``manual_ack``) only after the batch was committed and its
  Ack published, so a collector that dies mid-batch gets the message again (persistent session)
  or the van resends it (no end-to-end Ack); either way nothing is lost and duplicates are harmless.
* Batches are stored on a worker thread, never on paho's network thread, so keep-alive pings go
  out however slow the disk is. Memory is bounded by back-pressure, not by hope: the CONNECT asks
  the broker (MQTT 5 Receive Maximum) for at most ``receive_maximum`` unacknowledged messages at
  a time, by default ``INFLIGHT_BYTES // max batch bytes`` (2 batches of 4 MiB: 8 MiB of
  payload in hand), and the broker holds the rest of a flood until PUBACKs free the window.
* The topic names the vehicle (a van's ACL lets it publish only there); the batch must agree,
  else it is refused (``vehicle_mismatch``, counted and logged). With ``tls`` the collector
  connects with its own certificate, and the broker's ACL (``dropline pki mosquitto-conf``)
  ties each van's certificate to its own topics.
* The subscription is shared (``$share/dropline-collectors/...``) so collectors can run side by
  side, each batch going to one of them.
* Once subscribed it says so on ``dropline/v1/collectors``: batches that vans published while no
  collector was subscribed (a broker restart, where vans often reconnect first) were dropped by
  the broker, and the vans resend them at once instead of after their ack timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage, MQTTv5
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.ingest import Ingest
from protocols import topics
from protocols.mqtt_url import MqttTarget
from protocols.tls import TlsFiles

log = logging.getLogger("dropline.collector.mqtt")

INFLIGHT_BYTES = 8 * 1024 * 1024
"""Payload bytes a collector takes from the broker before it has acknowledged them (at most)."""


class MqttIngest:
    """One MQTT connection feeding the ingest. ``start`` returns at once and the client connects,
    reconnects (1-2 s apart) and resubscribes by itself; ``ready`` is set while subscribed.

    With a ``client_id`` the session is persistent (clean start off, kept an hour by the broker)
    so batches delivered during a collector restart wait for it; without one each start is fresh.
    ``receive_maximum`` (default: from ``INFLIGHT_BYTES``) bounds the batches held in memory.
    """

    def __init__(
        self,
        ingest: Ingest,
        target: MqttTarget,
        *,
        client_id: str | None = None,
        keepalive_s: int = 10,
        receive_maximum: int | None = None,
        shared: bool = True,
        session_expiry_s: int = 3600,
        tls: TlsFiles | None = None,
    ) -> None:
        self.ingest = ingest
        self.target = target
        self.subscription = topics.telemetry_subscription(shared=shared)
        self.ready = threading.Event()
        self._persistent = client_id is not None
        self._keepalive_s = keepalive_s
        if receive_maximum is None:
            receive_maximum = max(1, INFLIGHT_BYTES // ingest.limits.max_bytes)
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._queue: queue.Queue[tuple[int, MQTTMessage] | None] = queue.Queue(maxsize=4 * receive_maximum)
        self._generation = 0  # bumped on every (re)connect: a PUBACK never goes to a newer connection
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"dropline-collector-{uuid.uuid4().hex[:12]}",
            protocol=MQTTv5,
            manual_ack=True,
        )
        if target.username is not None:
            self.client.username_pw_set(target.username, target.password)
        if tls is not None:
            tls.read()  # a missing file is a ConfigError naming it
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = self._receive_maximum
        if self._persistent:
            props.SessionExpiryInterval = self._session_expiry_s
        self.client.connect_async(
            self.target.host,
            self.target.port,
            keepalive=self._keepalive_s,
            clean_start=not self._persistent,
            properties=props,
        )
        self._worker.start()
        self.client.loop_start()
        log.info("collector: MQTT ingest connecting to %s for %s", self.target, self.subscription)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batches already received (stored, acked, PUBACKed), then disconnect.
        Messages arriving meanwhile are left unacknowledged for the broker to deliver again."""
        self._stopping = True
        if self._worker.is_alive():
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                log.warning("collector: MQTT worker queue stuck; stopping anyway")
            self._worker.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        self.ready.clear()

    # -- paho callbacks (network thread: keep them short) ---------------------------------------

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, rc: ReasonCode, props: Properties | None
    ) -> None:
        if rc.is_failure:
            log.warning("collector: MQTT broker %s refused the connection: %s", self.target, rc)
            return
        self._generation += 1
        log.info("collector: MQTT connected to %s (session present: %s)", self.target, flags.session_present)
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Properties | None
    ) -> None:
        if all(not rc.is_failure for rc in rcs):
            log.info("collector: MQTT subscribed to %s", self.subscription)
            client.publish(topics.COLLECTORS, b"online", qos=1)  # vans resend what found no one
            self.ready.set()
        else:
            log.error("collector: MQTT subscription to %s refused: %s", self.subscription, rcs)

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.ready.clear()
        if not self._stopping:
            log.warning("collector: MQTT connection to %s lost (%s); reconnecting", self.target, rc)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if not self._stopping:
            self._queue.put((self._generation, message))

    # -- worker thread ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            generation, message = item
            try:
                self._process(message)
            except Exception:  # never lose the worker: the van resends what was not acknowledged
                log.exception("collector: MQTT message on %s could not be processed", message.topic)
            if generation == self._generation:
                self.client.ack(message.mid, message.qos)

    def _process(self, message: MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        if parsed is None or parsed[1] != topics.TELEMETRY:
            self.ingest.reject("bad_topic", message.topic)
            return
        vehicle = parsed[0]
        ack = self.ingest.handle(bytes(message.payload), vehicle)
        self.client.publish(topics.topic(vehicle, topics.ACK), ack.SerializeToString(), qos=1)
