"""Which hot modules run compiled. The same source runs as plain Python without a compiler."""

from __future__ import annotations

import importlib
import os

SHARED_HOT_MODULES = ("protocols.wire", "protocols.track_codec")
"""Compiled modules both roles run (the collector decodes what the van encodes)."""

HOT_MODULES = (
    *SHARED_HOT_MODULES,
    "firmware_bridge.gps.nmea_fields",
    "agent.geofence",
    "agent.resequencer",
)
"""Every compiled module (setup.py's CYTHON_MODULES); a van runs them all."""


class MissingExtension(ImportError):
    """A hot module runs as plain Python although DROPLINE_REQUIRE_CEXT=1 asks for the compiled one."""


def compiled(module_name: str) -> bool:
    module = importlib.import_module(module_name)
    return not (module.__file__ or "").endswith(".py")


def status(modules: tuple[str, ...] = HOT_MODULES) -> dict[str, bool]:
    return {name: compiled(name) for name in modules}


def check() -> None:
    """Raise if an extension is missing while the environment requires them all; in a collector's
    environment (``DROPLINE_ROLE=collector``) only the shared ones, the van's code not installed."""
    if os.environ.get("DROPLINE_REQUIRE_CEXT") != "1":
        return
    role_modules = SHARED_HOT_MODULES if os.environ.get("DROPLINE_ROLE") == "collector" else HOT_MODULES
    missing = [name for name, ok in status(role_modules).items() if not ok]
    if missing:
        raise MissingExtension(f"DROPLINE_REQUIRE_CEXT=1 but these run as plain Python: {', '.join(missing)}")
