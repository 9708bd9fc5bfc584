"""The MQTT uplink transport: batches published QoS 1 to ``dropline/v1/<vehicle>/telemetry``,
the collector's end-to-end acks read from ``dropline/v1/<vehicle>/ack`` and fleet documents
from ``dropline/v1/<vehicle>/documents``, all handed to the uplink as ``Downlink`` messages.

A broker's PUBACK only means the broker has the batch; the record leaves the outbox on the
collector's ack. Each connection is a fresh paho client with a clean session: after any drop
the uplink releases its open outbox transactions (the records go again) instead of letting
paho replay its in-memory session (which
ignores the in-flight limit on reconnect, paho issue #492). The broker drops batches published
while no collector is subscribed, so the van also listens on ``dropline/v1/collectors`` and
resends its unacknowledged batches when a collector announces itself there.
"""

from __future__ import annotations

import queue
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.uplink import drain
from protocols import topics
from protocols.downlink import Downlink, decode_ack, decode_document
from protocols.errors import TransportError, WireError
from protocols.mqtt_url import parse_mqtt_url
from protocols.tls import TlsFiles


class MqttTransport:
    def __init__(
        self, url: str, vehicle: str, keepalive_s: float = 5.0, window: int = 8, tls: TlsFiles | None = None
    ) -> None:
        """With ``tls``, mutual TLS: the broker takes this van's identity from its certificate
        (and its ACL lets it use only its own topics); without, plaintext (local tests only)."""
        target = parse_mqtt_url(url)
        self.host, self.port = target.host, target.port
        self.vehicle = vehicle
        self.keepalive = max(1, round(keepalive_s))
        self._telemetry = topics.topic(vehicle, topics.TELEMETRY)
        self._ack_topic = topics.topic(vehicle, topics.ACK)
        self._documents_topic = topics.topic(vehicle, topics.DOCUMENTS)
        self._downlink: queue.Queue[Downlink] = queue.Queue()
        self._ready = threading.Event()
        self._down = threading.Event()
        self._error = ""
        self.bad_messages = 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dropline-van-{vehicle}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
        if tls is not None:
            tls.read()  # a missing file is a ConfigError naming it, not an ssl traceback
            client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(window * 2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._error = f"broker refused: {reason}"
            self._down.set()
            return
        client.subscribe([(self._ack_topic, 1), (self._documents_topic, 1), (topics.COLLECTORS, 1)])
        self._ready.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._error = f"disconnected from broker: {reason}"
        self._down.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == topics.COLLECTORS:
            self._downlink.put(Downlink(collector_online=True))
            return
        try:
            if message.topic == self._documents_topic:
                self._downlink.put(Downlink(document=decode_document(bytes(message.payload))))
            else:
                self._downlink.put(Downlink(ack=decode_ack(bytes(message.payload))))
        except WireError:  # a garbage message is counted, never trusted
            self.bad_messages += 1

    def connect(self, timeout: float) -> None:
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive)
        except OSError as exc:  # ssl.SSLError too: a broker whose certificate does not check
            raise TransportError(f"MQTT broker {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._ready.wait(timeout) or self._down.is_set():
            raise TransportError(
                self._error or f"MQTT broker {self.host}:{self.port}: no CONNACK in {timeout} s"
            )

    def _check(self) -> None:
        if self._down.is_set():
            raise TransportError(self._error)

    def send(self, batch: bytes) -> None:
        self._check()
        info = self._client.publish(self._telemetry, batch, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_QUEUE_SIZE):
            raise TransportError(f"publish failed: {mqtt.error_string(info.rc)}")
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise TransportError("paho queue full: the broker is not taking messages")

    def receive(self, timeout: float) -> list[Downlink]:
        return drain(self._downlink, timeout, self._check)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
