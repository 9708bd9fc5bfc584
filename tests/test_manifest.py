"""The manifest loader: the schema file is the truth, errors name the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.manifest import load, parcel_key, parse, scan_keys
from protocols.errors import InputError
from protocols.records import Scan

CASE = Path(__file__).parent / "cases" / "route-day" / "manifest.json"
EXAMPLE = Path(__file__).parent.parent / "examples" / "manifest.json"


def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CASE.read_text())
    return loaded


def test_the_case_and_the_example_load() -> None:
    for path in (CASE, EXAMPLE):
        m = load(path)
        assert m.manifest_id == "munich-2014-09-10"
        assert [s.id for s in m.stops] == ["S1", "S2", "S3"]
        assert m.parcel_stop["106141412345678908"] == "S1"  # "(00)..." spelled as the bare SSCC
        assert [f.id for f in m.fences] == ["depot", "S1", "S2", "S3", "pedestrian-zone", "lez-ring"]
        assert [f.kind for f in m.fences] == ["depot", "stop", "stop", "stop", "restricted", "zone"]
        assert m.stops[0].window[1] - m.stops[0].window[0] == 35 * 60


def edit(path: str, value: Any) -> dict[str, Any]:
    """The case's manifest with the field at ``path`` (dots, [i]) set, or removed when value is ...
    (Ellipsis)."""
    d = doc()
    node: Any = d
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("manifest_id", ..., r"manifest\.manifest_id: required"),
        (
            "stops[1].window[1]",
            "tomorrow",
            r"manifest\.stops\[1\]\.window\[1\]: 'tomorrow' is not an ISO 8601",
        ),
        ("stops[0].window[1]", "2014-09-10T04:00:00Z", r"stops\[0\]\.window\[1\]: ends before"),
        ("stops[0].lat", 91, r"stops\[0\]\.lat: 91 is above the maximum 90"),
        ("stops[0].radius_m", ..., r"stops\[0\]: none of the alternatives"),
        (
            "stops[0].parcels[0]",
            "373400306809981733",
            r"stops\[1\]\.parcels\[1\]: .* also listed at stop 'S1'",
        ),
        ("stops[2].id", "S1", r"stops\[2\]\.id: 'S1' is already used"),
        ("stops[0].colour", "red", r"stops\[0\]\.colour: unknown field"),
        ("stops[0].service_s", "20", r"stops\[0\]\.service_s: expected number"),
        ("vehicle", "van 7", r"manifest\.vehicle: 'van 7' does not match"),
        (
            "fences.features[0].properties.kind",
            "lake",
            r"features\[0\]\.properties\.kind: 'lake' is not one of",
        ),
        ("fences.features[1].properties.id", "S2", r"features\[1\]\.properties\.id: 'S2' is already used"),
        (
            "fences.features[0].geometry.coordinates",
            [[[0, 0], [1, 1]]],
            r"features\[0\]\.geometry\.coordinates\[0\]",
        ),
    ],
)
def test_errors_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse(edit(path, value))


def test_travel_time_matrix_must_be_square_and_name_known_places() -> None:
    d = doc()
    d["travel_time_s"] = {"ids": ["depot", "S1"], "seconds": [[0, 600], [600, 0]]}
    assert parse(copy.deepcopy(d)).travel_time_s[("depot", "S1")] == 600
    d["travel_time_s"]["seconds"][1] = [600]
    with pytest.raises(InputError, match=r"travel_time_s\.seconds\[1\]: 1 entries, expected 2"):
        parse(d)
    d["travel_time_s"] = {"ids": ["depot", "nowhere"], "seconds": [[0, 1], [1, 0]]}
    with pytest.raises(InputError, match=r"travel_time_s\.ids\[1\]"):
        parse(d)


def test_parcel_keys_follow_gs1_identities() -> None:
    assert parcel_key("(00)106141412345678908") == "106141412345678908"
    assert parcel_key("(01)614141123452(21)X7") == "(01)00614141123452(21)X7"
    assert parcel_key(" jd0002 ") == "JD0002"
    scan = Scan(0.0, "]C1010061414112345221X7", "gs1", {"gtin": "00614141123452", "21": "X7"})
    assert scan_keys(scan)[0] == parcel_key("(01)00614141123452(21)X7")
