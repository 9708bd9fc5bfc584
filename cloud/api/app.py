"""The ASGI app of the control tower and the uvicorn server that runs it in a thread.

``create_app`` wires the routes; ``HttpServer`` runs uvicorn on its own thread and event loop
inside the collector's process (``dropline collector --http ADDR``), so the API reads the same
store the ingest writes and receives the ingest's commits for the live stream directly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cloud.api import fleet, live, openapi, share
from cloud.api.auth import require
from cloud.api.stream import Hub
from cloud.sqldb import SqlDb
from cloud.store import Store
from cloud.tokens import Tokens
from cloud.webhooks import Webhooks

PAGE_FILES = {"app.js": "text/javascript", "track.js": "text/javascript", "style.css": "text/css"}
"""The static files the pages load (``/static/NAME``), shipped as package data."""


def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi.document())


async def subscribe_webhook(request: Request) -> JSONResponse:
    require(request, "admin")
    hooks: Webhooks | None = request.app.state.webhooks
    if hooks is None:
        raise HTTPException(404, "webhooks are not enabled on this collector")
    try:
        body = json.loads(await request.body() or b"{}")
        url, secret = body["url"], body["secret"]
        sub = hooks.subscribe(url, secret)
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(400, f"give {{url, secret}}: {exc}") from None
    return JSONResponse({"id": sub, "url": url}, status_code=201)


def rollouts(request: Request) -> JSONResponse:
    """Every staged rollout of this collector's store, newest first (``cloud.rollout``): state,
    waves, counts per outcome and the targets pushed so far. Empty for a PostgreSQL store
    (rollouts live beside a SQLite store) or before the first ``config rollout``."""
    require(request)
    from cloud.rollout import Rollouts, path_for

    db: SqlDb = request.app.state.db
    if db.postgres or not path_for(db.path).exists():
        return JSONResponse([])
    table = Rollouts(db.path)
    try:
        return JSONResponse(table.all())
    finally:
        table.close()


def dispatcher_page(request: Request) -> HTMLResponse:
    return HTMLResponse(_page("dispatcher.html"), headers={"Cache-Control": "no-store"})


def static(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in PAGE_FILES:
        raise HTTPException(404, "no such file")
    return Response(_page(name), media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})


def _page(name: str) -> str:
    return resources.files("cloud").joinpath("pages", name).read_text()


API_ROUTES: list[Route] = [
    Route("/api/v1/openapi.json", openapi_json),
    Route("/api/v1/vehicles", fleet.vehicles),
    Route("/api/v1/vehicles/{vehicle}/track", fleet.track),
    Route("/api/v1/vehicles/{vehicle}/stops", fleet.stops),
    Route("/api/v1/vehicles/{vehicle}/exceptions", fleet.exceptions),
    Route("/api/v1/vehicles/{vehicle}/deliveries", fleet.deliveries),
    Route("/api/v1/vehicles/{vehicle}/blobs/{blob}", fleet.blob),
    Route("/api/v1/exceptions", fleet.exceptions),
    Route("/api/v1/kpis", fleet.kpis),
    Route("/api/v1/plan", fleet.plan),
    Route("/api/v1/rollouts", rollouts),
    Route("/api/v1/events", live.events),
    Route("/api/v1/shares", share.create_share, methods=["POST"]),
    Route("/api/v1/webhooks", subscribe_webhook, methods=["POST"]),
]

PAGE_ROUTES: list[BaseRoute] = [
    Route("/", dispatcher_page),
    Route("/static/{name}", static),
    Route("/t/{token}", share.page),
    Route("/t/{token}/state", share.state),
    Route("/t/{token}/events", share.events),
    Route("/t/{token}/photos/{blob}", share.photo),
]


def create_app(
    db: SqlDb | Path,
    store: Store,
    tokens: Tokens,
    hub: Hub,
    *,
    manifests: Path | None = None,
    webhooks: Webhooks | None = None,
) -> Starlette:
    """The app over the store whose database is ``db`` (a SQLite path is read through read-only
    connections of its own; a PostgreSQL database is the one every collector sharing it writes)."""
    app = Starlette(routes=[*API_ROUTES, *PAGE_ROUTES])
    app.state.db = db if isinstance(db, SqlDb) else SqlDb(db, readonly=True)
    app.state.store = store
    app.state.tokens = tokens
    app.state.hub = hub
    app.state.manifests = manifests
    app.state.webhooks = webhooks
    return app


@dataclass
class HttpServer:
    """uvicorn on a thread. ``start`` returns once it listens (or raises OSError); ``stop`` ends
    open event streams after ``grace_s``."""

    app: Any
    host: str
    port: int
    grace_s: float = 2.0

    def __post_init__(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=int(self.grace_s),
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    def start(self, timeout_s: float = 15.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError(f"HTTP server could not listen on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise OSError(f"HTTP server not listening on {self.host}:{self.port} after {timeout_s} s")
            time.sleep(0.02)

    @property
    def bound_port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.port

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(self.grace_s + 10)


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)
