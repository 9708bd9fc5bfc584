"""Bearer tokens on every API request: ``Authorization: Bearer TOKEN``, or ``?access_token=``
where a browser cannot set a header (``EventSource``, ``<img src>``). A missing, unknown or
malformed token is 401; a read token where admin is needed is 403."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from cloud.tokens import Tokens


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("access_token") or None


def require(request: Request, role: str = "read") -> str:
    """The caller's role, or HTTPException 401/403."""
    tokens: Tokens = request.app.state.tokens
    token = bearer(request)
    have = tokens.role(token) if token else None
    if have is None:
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
    if role == "admin" and have != "admin":
        raise HTTPException(403, "this needs an admin token")
    return have
