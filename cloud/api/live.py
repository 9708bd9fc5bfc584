"""``GET /api/v1/events``: Server-Sent Events, one ``record`` event per stored record
(``?vehicle=V`` for one van's), as the ingest commits them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from cloud.api.auth import require
from cloud.api.stream import Hub

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def events(request: Request) -> StreamingResponse:
    require(request)
    hub: Hub = request.app.state.hub
    vehicle = request.query_params.get("vehicle")

    def accept(event: dict[str, Any]) -> bool:
        return vehicle is None or event["vehicle"] == vehicle

    return StreamingResponse(hub.stream(accept), media_type="text/event-stream", headers=SSE_HEADERS)
