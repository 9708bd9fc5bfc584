"""Which hot modules run compiled. The same source runs as plain Python without a compiler."""

from __future__ import annotations

import importlib
import os

HOT_MODULES = ("firmware_bridge.gps.nmea_fields", "protocols.wire", "protocols.track_codec")


class MissingExtension(ImportError):
    """A hot module runs as plain Python although DROPLINE_REQUIRE_CEXT=1 asks for the compiled one."""


def compiled(module_name: str) -> bool:
    module = importlib.import_module(module_name)
    return not (module.__file__ or "").endswith(".py")


def status() -> dict[str, bool]:
    return {name: compiled(name) for name in HOT_MODULES}


def check() -> None:
    """Raise if an extension is missing while the environment requires them all."""
    if os.environ.get("DROPLINE_REQUIRE_CEXT") != "1":
        return
    missing = [name for name, ok in status().items() if not ok]
    if missing:
        raise MissingExtension(f"DROPLINE_REQUIRE_CEXT=1 but these run as plain Python: {', '.join(missing)}")
