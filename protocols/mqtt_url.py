"""``mqtt://[user[:password]@]host[:port]``: how vans and collectors name their broker."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user[:password]@]host[:port]`` (port 1883 by default); ValueError names the problem."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme != "mqtt":
        raise ValueError(f"{url}: only mqtt:// is supported")
    if not parts.hostname:
        raise ValueError(f"{url}: no host")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ValueError(f"{url}: bad port") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
