"""Accepting fleet documents: signature, vehicle, version, expiry and schema, on event time.

A ``Document`` event (from the downlink) is checked here, purely: the envelope against the trusted
keys (``protocols/envelope.py``), the target against this van, the version against the highest
accepted so far (strictly greater: no rollback, no replay), the expiry against the event's time
(never the wall clock), and the body against its kind's schema. A document that passes becomes
an ``apply_document`` effect: the shell writes it atomically (``agent/documents.py``) and answers
with an ``EffectResult``; only then does the stage report it applied. Every outcome is a
``DocumentStatus`` record, so the collector hears "applied" or "refused, with the reason".

A version counts as taken as soon as its effect is asked for, so a second copy arriving before
the first is written is refused as a replay; if writing fails the bar drops back.

Downlink documents enter the core as ``Document`` events whose kind is ``signed:<kind>``
(:func:`downlink`), so no other stage mistakes a signed envelope for a plain manifest (the
``[route] manifest`` file and ``dropline replay --manifest`` enter as kind ``manifest``). Once a
signed manifest is written (the ``EffectResult`` says applied), its body goes to the geofence
stage as that plain ``manifest`` document, in the same event: fences are swapped between two
fixes, keeping each kept fence's state, and the route stage takes the new manifest. A signed
configuration is in force from the next start (:attr:`DocumentStage.in_force` says so).
"""

from __future__ import annotations

import base64
import json
import tomllib
from collections import deque
from typing import Any

from agent.config import AgentConfig, build
from agent.documents import APPLY
from agent.events import CoreEvent, Document, EffectResult
from agent.manifest import loads as load_manifest
from agent.stages.base import NOTHING, Effect, StageOutput, VehicleState
from agent.stages.geofence import GeofenceStage
from protocols import envelope
from protocols.errors import InputError
from protocols.records import DocumentStatus, Record

SIGNED = "signed:"
"""Prefix of the event kind of a downlink document (a signed envelope)."""


def downlink(kind: str, envelope_bytes: bytes) -> Document:
    """The core event for a signed envelope received as ``kind``; the shell stamps its time."""
    return Document(0.0, SIGNED + kind, envelope_bytes)


def check_body(doc: envelope.Document, vehicle: str) -> None:
    """The body must be what its kind says: an agent configuration for this very van (a
    fleet-wide one leaves ``vehicle.id`` out), or a manifest (valid by its schema,
    ``agent/manifest.py``, naming this van if it names one)."""
    try:
        text = doc.body.decode("utf-8")
        if doc.kind == "config":
            raw = tomllib.loads(text)
            section = raw.setdefault("vehicle", {})
            if isinstance(section, dict):  # a fleet-wide configuration names no van: this one
                section.setdefault("id", vehicle)
            config = build(AgentConfig, raw, "config")
            if config.vehicle.id != vehicle:
                raise envelope.EnvelopeError("schema", f"configuration of {config.vehicle.id}")
        else:
            manifest = json.loads(text)
            if not isinstance(manifest, dict):
                raise envelope.EnvelopeError("schema", "a manifest is a JSON object")
            if manifest.get("vehicle", vehicle) != vehicle:
                raise envelope.EnvelopeError("schema", f"manifest of {manifest.get('vehicle')}")
            load_manifest(doc.body)
    except envelope.EnvelopeError:
        raise
    except (InputError, ValueError, RecursionError) as exc:  # TOML, JSON, UTF-8, settings
        raise envelope.EnvelopeError("schema", str(exc)[:200]) from None


class DocumentStage:
    """Checks documents and reports on them. ``highest`` is what the shell read from disk at
    start (per kind); ``fleet`` is the fleet whose documents this van also accepts; an applied
    manifest goes to ``geofence`` (the stage that runs after this one)."""

    def __init__(
        self,
        trust: envelope.Trust,
        vehicle: str,
        fleet: str | None,
        highest: dict[str, int],
        geofence: GeofenceStage | None = None,
    ) -> None:
        self.trust = trust
        self.vehicle = vehicle
        self.fleet = fleet or None
        self.geofence = geofence
        self.highest = dict.fromkeys(envelope.KINDS, 0) | highest
        self.in_force: dict[str, dict[str, Any]] = {}
        """Per kind, the version applied in this run and when it takes effect (for status)."""
        self._pending: deque[tuple[str, int, int, bytes]] = deque()  # kind, version, bar, body

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        if isinstance(event, Document) and event.kind.startswith(SIGNED):
            return self._document(event)
        if isinstance(event, EffectResult) and event.effect == APPLY and self._pending:
            kind, version, before, body = self._pending.popleft()
            if event.result.get("applied") == "true":
                return self._applied(event.time, kind, version, body, state)
            if self.highest[kind] == version:
                self.highest[kind] = before
            return self._status(event.time, kind, version, f"apply_failed: {event.result.get('error', '')}")
        return NOTHING

    def _applied(self, t: float, kind: str, version: int, body: bytes, state: VehicleState) -> StageOutput:
        """Written to disk: a manifest takes effect now, a configuration at the next start."""
        records: list[Record] = [*self._status(t, kind, version, "").records]
        if kind == "manifest":
            self.in_force[kind] = {"version": version, "applies": "now"}
            if self.geofence is not None:
                records += self.geofence.handle(Document(t, "manifest", body), state).records
        else:
            self.in_force[kind] = {"version": version, "applies": "at the next restart"}
        return StageOutput(records=tuple(records))

    def _document(self, event: Document) -> StageOutput:
        version = 0
        sent = event.kind.removeprefix(SIGNED)
        try:
            doc = envelope.open_envelope(event.body, self.trust)
            version = doc.version
            if doc.kind != sent:
                raise envelope.EnvelopeError("kind", f"sent as {sent!r}, signed as {doc.kind!r}")
            envelope.check_target(
                doc, vehicle=self.vehicle, fleet=self.fleet, highest=self.highest[doc.kind], now=event.time
            )
            check_body(doc, self.vehicle)
        except envelope.EnvelopeError as exc:
            kind = sent if sent in envelope.KINDS else "unknown"
            return self._status(event.time, kind, version, str(exc)[:300])
        self._pending.append((doc.kind, doc.version, self.highest[doc.kind], doc.body))
        self.highest[doc.kind] = doc.version
        effect = Effect(
            event.time,
            APPLY,
            {
                "kind": doc.kind,
                "version": str(doc.version),
                "envelope": base64.b64encode(event.body).decode(),
            },
        )
        return StageOutput(effects=(effect,))

    @staticmethod
    def _status(time: float, kind: str, version: int, reason: str) -> StageOutput:
        return StageOutput(records=(DocumentStatus(time, kind, version, not reason, reason),))
