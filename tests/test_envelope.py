"""The signed envelope: what it binds, what it refuses, and that no input crashes the verifier."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import envelope
from protocols.envelope import EnvelopeError, Trust, check_target, open_envelope, sign
from protocols.records import parse_iso_time

OLD, NEW, STRANGER = (Ed25519PrivateKey.generate() for _ in range(3))
OLD_PUB, NEW_PUB = (envelope.public_raw(k.public_key()) for k in (OLD, NEW))
EXPIRES = parse_iso_time("2027-01-01T00:00:00Z")
BODY = b'[uplink]\ntransport = "grpc"\n'


def _signed(keys: list[Ed25519PrivateKey] | None = None, **kw: object) -> bytes:
    args: dict[str, object] = {"kind": "config", "version": 5, "expires": EXPIRES, "vehicle": "van-7"}
    args.update(kw)
    return sign(BODY, keys or [OLD], **args)  # type: ignore[arg-type]


def _reason(data: bytes, trust: Trust) -> str:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(data, trust)
    return info.value.reason


def test_binds_every_field_and_verifies_with_the_bare_library() -> None:
    data = _signed()
    outer = json.loads(data)
    payload = base64.b64decode(outer["signed"])
    # independent of our verifier: the library itself on the documented signing input
    OLD.public_key().verify(
        base64.b64decode(outer["signatures"][0]["sig"]), b"dropline-envelope-v1\n" + payload
    )
    fields = json.loads(payload)
    assert fields["vehicle"] == "van-7" and fields["fleet"] is None
    assert fields["version"] == 5 and fields["kind"] == "config" and fields["schema"] == 1
    assert fields["expires"] == "2027-01-01T00:00:00.000Z"
    assert base64.b64decode(fields["body"]) == BODY
    doc = open_envelope(data, Trust([OLD_PUB]))
    assert (doc.vehicle, doc.version, doc.kind, doc.body, doc.expires) == (
        "van-7",
        5,
        "config",
        BODY,
        EXPIRES,
    )


def test_two_keys_valid_during_rotation_and_a_third_refused() -> None:
    trust = Trust([OLD_PUB, NEW_PUB])
    assert open_envelope(_signed([OLD]), trust).version == 5
    assert open_envelope(_signed([NEW]), trust).version == 5
    assert _reason(_signed([STRANGER]), trust) == "unknown_key"
    # after the change-over the old key is gone from the van's trust
    assert _reason(_signed([OLD]), Trust([NEW_PUB])) == "unknown_key"


def test_threshold_counts_distinct_key_ids_only() -> None:
    """GHSA-pwqf-9h7j-7mv8: one key's signature repeated must not meet a threshold of two."""
    trust = Trust([OLD_PUB, NEW_PUB], threshold=2)
    one = json.loads(_signed([OLD]))
    one["signatures"] = one["signatures"] * 2
    assert _reason(json.dumps(one).encode(), trust) == "threshold"
    assert _reason(_signed([OLD, OLD]), trust) == "threshold"
    assert open_envelope(_signed([OLD, NEW]), trust).signed_by == tuple(
        sorted(envelope.key_id(k) for k in (OLD_PUB, NEW_PUB))
    )
    # the same key given twice to the van is one key: a threshold of two cannot be configured on it
    with pytest.raises(ValueError):
        Trust([OLD_PUB, OLD_PUB], threshold=2)


def test_trust_takes_raw_32_byte_keys_only() -> None:
    """The verify side holds raw keys, so a van never needs ``cryptography``'s key objects."""
    with pytest.raises(TypeError):
        Trust([OLD.public_key()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="32 bytes"):
        Trust([OLD_PUB[:31]])
    assert envelope.load_public_key(envelope.public_pem(OLD.public_key())) == OLD_PUB
    with pytest.raises(ValueError, match="not an ed25519 public key"):
        envelope.load_public_key(envelope.public_pem(OLD.public_key()).replace(b"MCow", b"MCsw"))


def test_unknown_signers_ignored_but_a_bad_trusted_signature_refuses() -> None:
    trust = Trust([OLD_PUB])
    assert open_envelope(_signed([STRANGER, OLD]), trust).version == 5
    data = json.loads(_signed([OLD, NEW]))
    good_new = data["signatures"][1]["sig"]
    data["signatures"][0]["sig"] = good_new  # NEW's signature under OLD's id
    assert _reason(json.dumps(data).encode(), Trust([OLD_PUB, NEW_PUB])) == "bad_signature"


def test_other_schema_refused() -> None:
    assert _reason(_signed(schema=2), Trust([OLD_PUB])) == "schema"


def test_target_checks() -> None:
    doc = open_envelope(_signed(), Trust([OLD_PUB]))

    def reason(**kw: object) -> str | None:
        args: dict[str, object] = {"vehicle": "van-7", "fleet": None, "highest": 4, "now": EXPIRES - 1}
        args.update(kw)
        try:
            check_target(doc, **args)  # type: ignore[arg-type]
        except EnvelopeError as exc:
            return exc.reason
        return None

    assert reason() is None
    assert reason(vehicle="van-8") == "wrong_vehicle"
    assert reason(highest=5) == "old_version"  # a replay of the same version
    assert reason(highest=9) == "old_version"  # a rollback
    assert reason(now=EXPIRES) == "expired"
    fleet_doc = open_envelope(_signed(vehicle=None, fleet="north"), Trust([OLD_PUB]))
    check_target(fleet_doc, vehicle="van-7", fleet="north", highest=0, now=0.0)
    with pytest.raises(EnvelopeError, match="wrong_vehicle"):
        check_target(fleet_doc, vehicle="van-7", fleet="south", highest=0, now=0.0)


SIGNED_ONCE = _signed([OLD])
SIGNED_TWICE = _signed([OLD, NEW])


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([SIGNED_ONCE, SIGNED_TWICE]))
def test_any_single_byte_changed_is_refused(data: st.DataObject, original: bytes) -> None:
    i = data.draw(st.integers(0, len(original) - 1), label="index")
    b = data.draw(st.integers(0, 255).filter(lambda v: v != original[i]), label="byte")
    changed = original[:i] + bytes([b]) + original[i + 1 :]
    trust = Trust([OLD_PUB, NEW_PUB])
    try:
        doc = open_envelope(changed, trust)
    except EnvelopeError:
        return
    # The only change let through: a second signer's key id turned into one the van does not
    # know (ignored, as TUF does), leaving a trusted signature over the very same payload.
    assert original is SIGNED_TWICE
    ids = [envelope.key_id(k) for k in (OLD_PUB, NEW_PUB)]
    assert any(original.index(k.encode()) <= i < original.index(k.encode()) + 64 for k in ids)
    assert len(doc.signed_by) == 1
    assert doc == dataclasses.replace(open_envelope(original, trust), signed_by=doc.signed_by)


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_verifier(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(data, Trust([OLD_PUB]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(json_values, st.dictionaries(st.sampled_from(sorted(envelope._PAYLOAD_KEYS)), json_values))
def test_arbitrary_json_never_crashes_the_verifier(outer: object, payload: dict[str, object]) -> None:
    """Structured garbage, including a well-signed payload of wrong fields and types."""
    with pytest.raises(EnvelopeError):
        open_envelope(json.dumps(outer).encode(), Trust([OLD_PUB]))
    raw = json.dumps(payload).encode()
    sig = base64.b64encode(OLD.sign(envelope.DOMAIN + raw)).decode()
    keyid = envelope.key_id(OLD_PUB)
    forged = {"signed": base64.b64encode(raw).decode(), "signatures": [{"keyid": keyid, "sig": sig}]}
    with pytest.raises(EnvelopeError):
        open_envelope(json.dumps(forged).encode(), Trust([OLD_PUB]))


def test_a_second_spelling_of_the_same_base64_is_refused() -> None:
    """ed25519 signatures are 64 bytes, so their base64 ends in one char + "==" whose 4 low bits
    a lenient decoder ignores: flipping them yields the same bytes, and must still be refused."""
    data = json.loads(SIGNED_ONCE)
    sig = data["signatures"][0]["sig"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(sig[-3]) ^ 1]
    data["signatures"][0]["sig"] = sig[:-3] + twin + "=="
    assert base64.b64decode(data["signatures"][0]["sig"]) == base64.b64decode(sig)
    assert _reason(json.dumps(data, separators=(",", ":")).encode(), Trust([OLD_PUB])) == "malformed"
