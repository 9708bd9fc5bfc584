"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``. Written by
hand beside the routes (``app.API_ROUTES``); a test checks that every API route is described
and every described operation is routed."""

from __future__ import annotations

from typing import Any

_VEHICLE = {"name": "vehicle", "in": "path", "required": True, "schema": {"type": "string"}}
_FROM = {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}}
_TO = {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}}
_ARRAY = {"type": "array", "items": {"type": "object"}}


def _op(
    summary: str,
    schema: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    media: str = "application/json",
    admin: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {
            "200" if not admin else "201": {"description": "OK", "content": {media: {"schema": schema}}},
            "401": {"description": "no valid bearer token"},
        },
    }
    if admin:
        op["responses"]["403"] = {"description": "not an admin token"}
        op["responses"]["400"] = {"description": "bad request body"}
    return op


VEHICLE_STATE = {
    "type": "object",
    "required": ["vehicle", "time", "lat", "lon"],
    "properties": {
        "vehicle": {"type": "string"},
        "time": {"type": ["string", "null"], "format": "date-time"},
        "lat": {"type": ["number", "null"]},
        "lon": {"type": ["number", "null"]},
        "soc": {"type": "number", "description": "state of charge, %"},
        "speed": {"type": "number", "description": "m/s, of the latest fix"},
        "next_stop": {"type": "string"},
        "eta": {"type": "string", "format": "date-time"},
        "open_exceptions": _ARRAY,
    },
}
TRACK_POINT = {
    "type": "object",
    "required": ["time", "lat", "lon"],
    "properties": {
        "time": {"type": "string", "format": "date-time"},
        "lat": {"type": "number"},
        "lon": {"type": "number"},
    },
}
ROLLOUT = {
    "type": "object",
    "required": ["id", "kind", "version", "state", "waves", "counts", "targets"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string"},
        "version": {"type": "integer"},
        "state": {"type": "string", "enum": ["running", "aborted", "completed"]},
        "reason": {"type": "string", "description": "why it aborted"},
        "fraction": {"type": "number", "description": "of the vans in the first wave"},
        "abort_refusals": {"type": "number"},
        "silent_after_s": {"type": "number"},
        "created_at": {"type": "number", "description": "Unix time"},
        "waves": {"type": "integer", "description": "waves pushed so far"},
        "counts": {
            "type": "object",
            "description": "targets per outcome: pending, applied, refused, silent, not_pushed",
            "additionalProperties": {"type": "integer"},
        },
        "targets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "vehicle": {"type": "string"},
                    "wave": {"type": "integer"},
                    "outcome": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}


PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/openapi.json": {
        "get": {"summary": "this document", "security": [], "responses": {"200": {"description": "OK"}}}
    },
    "/api/v1/vehicles": {"get": _op("latest state per van", {"type": "array", "items": VEHICLE_STATE})},
    "/api/v1/vehicles/{vehicle}/track": {
        "get": _op(
            "a van's decoded track in a time range",
            {"type": "array", "items": TRACK_POINT},
            [_VEHICLE, _FROM, _TO],
        )
    },
    "/api/v1/vehicles/{vehicle}/stops": {"get": _op("stop progress and ETAs", _ARRAY, [_VEHICLE])},
    "/api/v1/vehicles/{vehicle}/exceptions": {
        "get": _op("a van's exceptions (open and cleared)", _ARRAY, [_VEHICLE, _FROM, _TO])
    },
    "/api/v1/vehicles/{vehicle}/deliveries": {
        "get": _op("proofs of delivery with their photos", _ARRAY, [_VEHICLE])
    },
    "/api/v1/vehicles/{vehicle}/blobs/{blob}": {
        "get": _op(
            "a photo, reassembled and checked against its SHA-256",
            {"type": "string", "format": "binary"},
            [_VEHICLE, {"name": "blob", "in": "path", "required": True, "schema": {"type": "string"}}],
            media="application/octet-stream",
        )
    },
    "/api/v1/exceptions": {
        "get": _op(
            "the fleet's exceptions",
            _ARRAY,
            [_FROM, _TO, {"name": "open", "in": "query", "schema": {"type": "boolean"}}],
        )
    },
    "/api/v1/kpis": {
        "get": _op(
            "KPIs per van and depot for one UTC day",
            {
                "type": "object",
                "properties": {
                    "day": {"type": "string"},
                    "vans": {"type": "object"},
                    "depots": {"type": "object"},
                },
            },
            [{"name": "day", "in": "query", "schema": {"type": "string", "format": "date"}}],
        )
    },
    "/api/v1/plan": {
        "get": _op(
            "the manifests' stops (place, circle, window) and fences (GeoJSON) for the map",
            {
                "type": "object",
                "required": ["stops", "fences"],
                "properties": {
                    "stops": _ARRAY,
                    "fences": {
                        "type": "object",
                        "description": "a GeoJSON FeatureCollection: Polygon, MultiPolygon, or Point"
                        " with properties.radius_m (a circle)",
                    },
                },
            },
            [{"name": "vehicle", "in": "query", "schema": {"type": "string"}}],
        )
    },
    "/api/v1/rollouts": {
        "get": _op(
            "staged rollouts of signed documents, newest first (advanced by the collector's timer)",
            {"type": "array", "items": ROLLOUT},
        )
    },
    "/api/v1/events": {
        "get": _op(
            "Server-Sent Events: one `record` event per stored record",
            {"type": "string"},
            [{"name": "vehicle", "in": "query", "schema": {"type": "string"}}],
            media="text/event-stream",
        )
    },
    "/api/v1/shares": {
        "post": {
            **_op("create a customer tracking link for a stop", {"type": "object"}, admin=True),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["stop"],
                            "properties": {
                                "stop": {"type": "string"},
                                "vehicle": {"type": "string"},
                                "ttl_s": {"type": "number"},
                            },
                        }
                    }
                },
            },
        }
    },
    "/api/v1/webhooks": {
        "post": {
            **_op("subscribe a URL to webhook events", {"type": "object"}, admin=True),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["url", "secret"],
                            "properties": {
                                "url": {"type": "string", "format": "uri"},
                                "secret": {"type": "string"},
                            },
                        }
                    }
                },
            },
        }
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Dropline control tower", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": PATHS,
    }
