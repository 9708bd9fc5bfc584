"""The MQTT topic scheme: ``dropline/v1/<vehicle>/<kind>``.

A vehicle id is 1-64 characters of ``[A-Za-z0-9_.-]``: no ``/``, ``+`` or ``#``, so a van can
never publish into another van's topics or a wildcard, and the collector checks it again.
"""

from __future__ import annotations

import re

PREFIX = "dropline/v1"
TELEMETRY = "telemetry"
ACK = "ack"
DOCUMENTS = "documents"
"""Signed fleet documents (configuration, manifests) for one van, published retained by the
collector; the van reads only its own (broker ACL) and checks each envelope itself."""
VEHICLE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SHARE_GROUP = "dropline-collectors"
COLLECTORS = f"{PREFIX}/collectors"
"""Where a collector says it has just (re)subscribed. Three levels, so no vehicle's topic is it.
The broker drops batches published while no collector is subscribed (after a broker restart the
vans often reconnect first), so a van resends its unacknowledged batches when it hears this
instead of waiting out its ack timeout."""


def valid_vehicle(vehicle: str) -> bool:
    return VEHICLE_ID.fullmatch(vehicle) is not None


def topic(vehicle: str, kind: str) -> str:
    if not valid_vehicle(vehicle):
        raise ValueError(f"invalid vehicle id {vehicle!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return f"{PREFIX}/{vehicle}/{kind}"


def telemetry_subscription(shared: bool = True) -> str:
    """Every van's telemetry; as an MQTT 5 / Mosquitto shared subscription so collectors scale out."""
    pattern = f"{PREFIX}/+/{TELEMETRY}"
    return f"$share/{SHARE_GROUP}/{pattern}" if shared else pattern


def parse(topic_name: str) -> tuple[str, str] | None:
    """(vehicle, kind) of a Dropline topic, or None if the topic is not one of ours."""
    parts = topic_name.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX or not valid_vehicle(parts[2]):
        return None
    return parts[2], parts[3]
