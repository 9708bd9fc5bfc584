"""``mqtt://[user[:password]@]host[:port]``: how vans and collectors name their broker.

Strict on purpose: a URL that would silently mean something else is refused. ``urlsplit`` alone
drops tabs and newlines, ignores a path, and turns port 0 into "no port"; here each of those is a
``ValueError`` naming the problem.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 1883
# RFC 1123 host names (letters, digits, hyphens; no hyphen at either end of a label), with "_",
# which container and mDNS names use and resolvers accept.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """The broker without its credentials, safe to log; parses back to host and port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user[:password]@]host[:port]`` (``mqtt://`` optional, port 1883 by default).

    User and password are percent-decoded (``%40`` for ``@``, ``%3A`` for ``:``); an empty user or
    password is absent. The host is a DNS name, an IPv4 address or a bracketed IPv6 address.
    Anything else raises ``ValueError`` whose message starts with the URL and names the problem;
    nothing else is raised.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{url!r}: whitespace or control characters")
    try:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        hostname = parts.hostname
    except ValueError as exc:  # a malformed [IPv6] host
        raise ValueError(f"{url}: bad host ({exc})") from None
    if parts.scheme != "mqtt":
        raise ValueError(f"{url}: only mqtt:// is supported")
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        raise ValueError(f"{url}: unexpected path, query or fragment after the host")
    if not hostname:
        raise ValueError(f"{url}: no host")
    if not _valid_host(hostname):
        raise ValueError(f"{url}: {hostname!r} is not a host name or IP address")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # urlsplit allows 0; a broker cannot listen there
        raise ValueError(f"{url}: bad port (1..65535)")
    username = _decoded(parts.username, url, "user")
    password = _decoded(parts.password, url, "password")
    if password is not None and username is None:
        raise ValueError(f"{url}: a password needs a user")
    return MqttTarget(host=hostname, port=port or DEFAULT_PORT, username=username, password=password)


def _valid_host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _decoded(text: str | None, url: str, what: str) -> str | None:
    if not text:
        return None
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"{url}: {what} is not valid UTF-8 once percent-decoded") from None
