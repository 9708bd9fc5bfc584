"""Builds the Cython extensions. Everything else about the package is in pyproject.toml.

The hot modules are plain Python files in Cython's pure-Python mode: compiled here when a C
compiler is present, imported as ordinary Python otherwise. ``dropline_cli.cext`` reports which ran,
and ``DROPLINE_REQUIRE_CEXT=1`` (set in CI) turns a missing extension into an error.
"""

import os

from setuptools import setup

CYTHON_MODULES = [
    "agent/geofence.py",
    "firmware_bridge/gps/nmea_fields.py",
    "protocols/wire.py",
    "protocols/track_codec.py",
    "agent/resequencer.py",
]


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        if os.environ.get("DROPLINE_REQUIRE_CEXT") == "1":
            raise
        return []
    return cythonize(
        CYTHON_MODULES,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )


setup(ext_modules=extensions())
