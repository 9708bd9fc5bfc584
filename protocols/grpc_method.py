"""The gRPC service and method names, shared by the van's transport and the collector's server
(both send raw ``wire`` bytes with an identity serializer, so neither uses the generated stub)."""

from __future__ import annotations

SERVICE = "dropline.v1.Uplink"
STREAM_METHOD = f"/{SERVICE}/Stream"
"""Batches up; ``Downlink`` messages (acks, documents) down, on one long-lived stream per van."""
