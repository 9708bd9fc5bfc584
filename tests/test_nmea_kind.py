"""Property tests for the decoder's shortcuts in nmea_fields: ``sentence_kind`` (a sentence's type
read from its tag without splitting it) and ``used_prns`` (GSA's satellites in use), each against
an independent statement of the rule and against the same source run as plain Python."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.gps import nmea_fields as nf

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = {
    "GGA": nf.KIND_GGA,
    "RMC": nf.KIND_RMC,
    "GLL": nf.KIND_GLL,
    "GNS": nf.KIND_GNS,
    "VTG": nf.KIND_VTG,
    "GSA": nf.KIND_GSA,
    "ZDA": nf.KIND_ZDA,
}


def _plain() -> ModuleType:
    source = (nf.__file__ or "").rsplit("/", 1)[0] + "/nmea_fields.py"
    spec = importlib.util.spec_from_file_location("nmea_fields_plain_kind", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAIN = _plain()


def _kind_by_split(body: str) -> int:
    """The rule stated the slow way: split, the tag is field 0, talker + type, not proprietary."""
    tag = body.split(",")[0]
    if len(tag) != 5 or tag[0] == "P":
        return nf.KIND_NONE
    return KINDS.get(tag[2:], nf.KIND_OTHER)


_tags = st.sampled_from(["GP", "GN", "GL", "BD", "PG", "P", "", "G", "GPX", ","]).flatmap(
    lambda talker: st.sampled_from([*KINDS, "GSV", "TXT", "GS", "GGAA", "gga", ""]).map(
        lambda kind: talker + kind
    )
)
_bodies = st.tuples(_tags, st.sampled_from(["", ",", ",1,2", "*", ",,,"])).map("".join) | st.text(max_size=12)


@PROPS
@given(_bodies)
def test_sentence_kind_is_the_tag_rule(body: str) -> None:
    assert nf.sentence_kind(body) == _kind_by_split(body)
    assert PLAIN.sentence_kind(body) == _kind_by_split(body)


def test_sentence_kind_examples() -> None:
    """Hand-picked: the known types, other types, proprietary and malformed tags."""
    assert nf.sentence_kind("GPGGA,123519,4807.038,N") == nf.KIND_GGA
    assert nf.sentence_kind("GNRMC,") == nf.KIND_RMC
    assert nf.sentence_kind("GPGSA") == nf.KIND_GSA  # no fields at all: still a GSA (then rejected)
    assert nf.sentence_kind("GPGSV,3,1,11") == nf.KIND_OTHER
    assert nf.sentence_kind("PGRME,15.0,M") == nf.KIND_NONE
    assert nf.sentence_kind("GPGGAX,1") == nf.KIND_NONE
    assert nf.sentence_kind("GP,GGA") == nf.KIND_NONE


_slots = st.lists(st.sampled_from(["", "0", "00", "01", "12", "193", "x", "-3", "1.5", " 4"]), max_size=20)


@PROPS
@given(_slots, st.integers(0, 20), st.integers(0, 25))
def test_used_prns_counts_positive_integers(fields: list[str], start: int, stop: int) -> None:
    truth = sum(1 for f in fields[start:stop] if f.isdigit() and f.isascii() and int(f) > 0)
    assert nf.used_prns(fields, start, stop) == truth
    assert PLAIN.used_prns(fields, start, stop) == truth
