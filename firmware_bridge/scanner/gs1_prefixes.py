"""``biip.gs1_prefixes`` without the GS1 Company Prefix table, for a van's memory budget.

biip 5.2.0 decompresses and parses its whole company-prefix table (5 MB of JSON, about 20 MB of
Python dicts) when ``biip.gs1_prefixes`` is imported, and every biip parser imports it. The scan
fields we emit never use a company prefix (it only splits an SSCC's human-readable form and a
GTIN's item reference, neither of which we read), so :func:`install` puts this module in its place
before biip is first imported: ``GS1Prefix`` and ``GS18Prefix`` behave as biip's (same small table,
read from biip's own package data), ``GS1CompanyPrefix.extract`` answers ``None`` (biip's answer
for an unassigned prefix). A process that imported biip before :func:`install` keeps biip's own
module; ``tests/test_scan_prefixes.py`` checks both give the same scans.
"""

from __future__ import annotations

import json
import lzma
import sys
import types
from dataclasses import dataclass
from importlib import resources
from typing import Any

_NAME = "biip.gs1_prefixes"


@dataclass(frozen=True)
class GS1Prefix:
    """A GS1 Prefix (the first digits of a GTIN, GLN or SSCC) and who uses it, as biip's."""

    value: str
    usage: str

    @classmethod
    def extract(cls, value: str) -> GS1Prefix | None:
        """The prefix of ``value`` from biip's prefix table, ``None`` if unassigned."""
        from biip import ParseError

        if not value.isdecimal():
            raise ParseError(f"Failed to get GS1 Prefix from {value!r}.")
        node: Any = _prefix_trie()
        for digit in value:
            if digit not in node:
                return None
            node = node[digit]
            if isinstance(node, list):
                return cls(value=value[: int(node[0])], usage=str(node[1]))
        return None


@dataclass(frozen=True)
class GS18Prefix:
    """The GS1-8 Prefix of a GTIN-8 (GS1 General Specifications 1.4.3), as biip's."""

    value: str
    usage: str

    @classmethod
    def extract(cls, value: str) -> GS18Prefix | None:
        """The GS1-8 prefix of ``value``, ``None`` if unassigned."""
        from biip import ParseError

        if not value.isdecimal():
            raise ParseError(f"Failed to get GS1-8 Prefix from {value!r}.")
        if len(value) < 3:
            return None
        prefix = value[:3]
        number = int(prefix)
        if number <= 99 or 200 <= number <= 299:
            return cls(prefix, "Used to issue Restricted Circulation Numbers within a company")
        if number <= 976:
            gs1 = GS1Prefix.extract(value)
            return None if gs1 is None else cls(prefix, gs1.usage)
        return cls(prefix, "Reserved for future use")


@dataclass(frozen=True)
class GS1CompanyPrefix:
    """Never found here: the company-prefix table is what this module leaves out."""

    value: str

    @classmethod
    def extract(cls, value: str) -> GS1CompanyPrefix | None:
        """``None``, biip's answer for a prefix it does not know (after biip's own input check)."""
        from biip import ParseError

        if not value.isdecimal():
            raise ParseError(f"Failed to get GS1 Company Prefix from {value!r}.")
        return None


_TRIE: list[dict[str, Any]] = []


def _prefix_trie() -> dict[str, Any]:
    """biip's GS1 Prefix table (2 KB compressed), read on first use."""
    if not _TRIE:
        data = (resources.files("biip") / "gs1_prefixes" / "_prefix_trie.json.lzma").read_bytes()
        _TRIE.append(json.loads(lzma.decompress(data).decode()))
    return _TRIE[0]


def install() -> bool:
    """Stand in for ``biip.gs1_prefixes`` unless biip's own is already loaded; True if installed."""
    if _NAME in sys.modules:
        return getattr(sys.modules[_NAME], "__stand_in__", "") == __name__
    module = types.ModuleType(_NAME, __doc__)
    module.__stand_in__ = __name__  # type: ignore[attr-defined]
    for cls in (GS1Prefix, GS18Prefix, GS1CompanyPrefix):
        setattr(module, cls.__name__, cls)
    module.__all__ = ["GS1CompanyPrefix", "GS1Prefix", "GS18Prefix"]  # type: ignore[attr-defined]
    sys.modules[_NAME] = module
    return True
