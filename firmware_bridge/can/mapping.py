"""Vehicle mappings: which DBC signals become which COVESA VSS signals, and how.

One TOML file per vehicle model (shipped ones in ``firmware_bridge/can/mappings/``)::

    dbc = "pcan.dbc"          # the DBC file this mapping was written against (its file name)
    only_mapped = true        # emit only the signals below (default false: others as <Message>.<Signal>)

    [signals."Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"]
    message = "BatteryLimits"
    signals = ["SoC_Maybe", "SoC_Fraction"]   # or: signal = "SocDisp"
    combine = "sum"                           # sum | mean; required with more than one signal

Optional per entry, applied in this order to the DBC-scaled values: ``combine``, then
``value * scale / divide + offset``, then ``values`` (a lookup table ``{"<value>" = number}``;
values missing from it are dropped). ``invalid_raw`` lists raw (unscaled) values of any source
signal that mean "not available" (SNA): such a frame yields nothing for that entry.

Loading checks the file's shape and names the file and key of every mistake; :meth:`Mapping.check`
then checks that every message and signal exists in the DBC actually loaded.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from protocols.errors import MappingError

SHIPPED_PACKAGE = "firmware_bridge.can.mappings"
COMBINES = ("sum", "mean")
_TOP_KEYS = {"dbc", "only_mapped", "description", "signals"}
_ENTRY_KEYS = {
    "message",
    "signal",
    "signals",
    "combine",
    "scale",
    "divide",
    "offset",
    "values",
    "invalid_raw",
    "comment",
}


@dataclass(frozen=True)
class MappingEntry:
    """One VSS output: computed from one or more signals of a single DBC message."""

    vss: str
    message: str
    signals: tuple[str, ...]
    combine: str | None = None
    scale: float = 1.0
    divide: float = 1.0
    offset: float = 0.0
    values: dict[float, float] | None = None
    invalid_raw: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Mapping:
    """A parsed mapping file; ``source`` is where it came from, for error messages."""

    source: str
    dbc: str
    entries: tuple[MappingEntry, ...]
    only_mapped: bool = False
    description: str = ""
    by_message: dict[str, list[MappingEntry]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self.by_message.setdefault(entry.message, []).append(entry)

    def check(self, db: Any) -> None:
        """Raise MappingError unless every referenced message and signal exists in ``db``."""
        for entry in self.entries:
            where = f'{self.source}: [signals."{entry.vss}"]'
            try:
                message = db.get_message_by_name(entry.message)
            except KeyError:
                raise MappingError(f"{where} message: {entry.message!r} is not in the DBC") from None
            names = {s.name for s in message.signals}
            for name in entry.signals:
                if name not in names:
                    raise MappingError(f"{where} signals: {name!r} is not a signal of {entry.message}")


def shipped_names() -> list[str]:
    """The mappings shipped with the package, by name (``kona_ev``, ...)."""
    root = resources.files(SHIPPED_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_mapping(source: str | Path, db: Any = None) -> Mapping:
    """A mapping from a shipped name (``kona_ev``) or a TOML file path; checked against ``db`` if given."""
    text, where = _read(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{where}: not valid TOML: {exc}") from None
    mapping = _parse(doc, where)
    if db is not None:
        mapping.check(db)
    return mapping


def _read(source: str | Path) -> tuple[str, str]:
    name = str(source)
    path = Path(name)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for a path, or with a NUL in it
        exists = False
    if not name.endswith(".toml") and path.parent == Path(".") and not exists:
        known = shipped_names()
        if name not in known:
            raise MappingError(f"{name}: no such mapping (shipped: {', '.join(known)}; or give a .toml path)")
        return resources.files(SHIPPED_PACKAGE).joinpath(f"{name}.toml").read_text(
            encoding="utf-8"
        ), f"{name}.toml"
    try:
        return path.read_text(encoding="utf-8"), name
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MappingError(f"{name}: cannot read: {exc}") from None


def _parse(doc: dict[str, Any], where: str) -> Mapping:
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise MappingError(f"{where}: {sorted(unknown)[0]}: unknown key (expected {sorted(_TOP_KEYS)})")
    dbc = doc.get("dbc")
    if not isinstance(dbc, str) or not dbc:
        raise MappingError(f"{where}: dbc: required, the DBC file name this mapping was written for")
    only_mapped = doc.get("only_mapped", False)
    if not isinstance(only_mapped, bool):
        raise MappingError(f"{where}: only_mapped: must be true or false")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise MappingError(f"{where}: description: must be a string")
    table = doc.get("signals")
    if not isinstance(table, dict) or not table:
        raise MappingError(f'{where}: signals: required, tables like [signals."Vehicle.Speed"]')
    entries = tuple(_entry(vss, body, where) for vss, body in table.items())
    return Mapping(where, dbc, entries, only_mapped, description)


def _entry(vss: str, body: Any, where: str) -> MappingEntry:
    at = f'{where}: [signals."{vss}"]'
    if not vss.startswith("Vehicle.") or any(not part for part in vss.split(".")):
        raise MappingError(f"{at}: not a VSS name (Vehicle.<Branch>...<Leaf>)")
    if not isinstance(body, dict):
        raise MappingError(f"{at}: must be a table")
    unknown = set(body) - _ENTRY_KEYS
    if unknown:
        raise MappingError(f"{at} {sorted(unknown)[0]}: unknown key (expected {sorted(_ENTRY_KEYS)})")
    message = body.get("message")
    if not isinstance(message, str) or not message:
        raise MappingError(f"{at} message: required, a message name of the DBC")
    if ("signal" in body) == ("signals" in body):
        raise MappingError(f'{at}: give exactly one of signal = "Name" or signals = [...]')
    raw_signals = [body["signal"]] if "signal" in body else body["signals"]
    key = "signal" if "signal" in body else "signals"
    if (
        not isinstance(raw_signals, list)
        or not raw_signals
        or not all(isinstance(s, str) and s for s in raw_signals)
    ):
        raise MappingError(f"{at} {key}: must be a signal name or a non-empty list of them")
    combine = body.get("combine")
    if combine is not None and combine not in COMBINES:
        raise MappingError(f"{at} combine: must be one of {list(COMBINES)}")
    if len(raw_signals) > 1 and combine is None:
        raise MappingError(f"{at} combine: required with several signals (one of {list(COMBINES)})")
    scale = _number(body, "scale", 1.0, at)
    divide = _number(body, "divide", 1.0, at)
    if divide == 0:
        raise MappingError(f"{at} divide: must not be 0")
    offset = _number(body, "offset", 0.0, at)
    return MappingEntry(
        vss=vss,
        message=message,
        signals=tuple(raw_signals),
        combine=combine,
        scale=scale,
        divide=divide,
        offset=offset,
        values=_values(body.get("values"), at),
        invalid_raw=_invalid(body.get("invalid_raw"), at),
    )


def _number(body: dict[str, Any], key: str, default: float, at: str) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MappingError(f"{at} {key}: must be a finite number")
    return value


def _values(table: Any, at: str) -> dict[float, float] | None:
    if table is None:
        return None
    if not isinstance(table, dict) or not table:
        raise MappingError(f'{at} values: must be a table like {{ "0" = 126, "5" = 127 }}')
    out: dict[float, float] = {}
    for key, value in table.items():
        try:
            number = float(key)
        except ValueError:
            raise MappingError(f"{at} values: key {key!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise MappingError(f"{at} values.{key}: must be a finite number")
        out[int(number) if number.is_integer() else number] = value
    return out


def _invalid(values: Any, at: str) -> frozenset[int]:
    if values is None:
        return frozenset()
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise MappingError(f"{at} invalid_raw: must be a list of integers (raw signal values)")
    return frozenset(values)
