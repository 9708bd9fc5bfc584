"""Photos and signatures: chunking on the van, intake through the inbox folder and the loopback
endpoint, reassembly and verification at the collector, and a photo that arrives whole, once,
across a collector outage and an agent SIGKILL (real processes)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import PhotosConfig
from agent.outbox import Outbox
from agent.photos import PhotoIntake, chunk_blob, delivery_from_name
from cloud.blobs import INCONSISTENT, SHA256_MISMATCH, Blobs
from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import BlobChunk, Fix
from tests import pipeline_fixtures as pf
from tests.netproxy import BlackholeProxy

T0 = 1_700_000_000.0


def records(chunks: list[BlobChunk], first_seq: int = 1) -> list[pb.Record]:
    return [convert.to_pb(first_seq + i, c) for i, c in enumerate(chunks)]


# -- chunking ----------------------------------------------------------------------------------


@given(data=st.binary(max_size=5000), size=st.integers(1, 700))
def test_chunks_cover_the_bytes_in_order(data: bytes, size: int) -> None:
    chunks = chunk_blob(data, time=T0, delivery="S1/P1", media_type="image/png", chunk_bytes=size)
    assert len(chunks) == max(1, -(-len(data) // size))  # ceil, and one chunk for an empty file
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.count == len(chunks) and 0 < len(c.data) <= size for c in chunks if data)
    assert b"".join(c.data for c in chunks) == data
    assert {c.sha256 for c in chunks} == {hashlib.sha256(data).hexdigest()}
    assert len({c.blob for c in chunks}) == 1


def test_blob_id_names_the_content_and_delivery() -> None:
    def one(data: bytes, delivery: str) -> str:
        return chunk_blob(data, time=T0, delivery=delivery, media_type="image/jpeg", chunk_bytes=10)[0].blob

    assert one(b"abc", "S1/P1") == one(b"abc", "S1/P1")  # a re-take is the same blob
    assert one(b"abc", "S1/P1") != one(b"abd", "S1/P1")
    assert one(b"abc", "S1/P1") != one(b"abc", "S2/P1")  # one picture proving two parcels: two blobs


def test_inbox_names() -> None:
    assert delivery_from_name("S12__00340123450000000018.JPG") == ("S12/00340123450000000018", "image/jpeg")
    assert delivery_from_name("S1__P__2.png") == ("S1/P__2", "image/png")
    for bad in ("S1.jpg", "__P1.jpg", "S1__.jpg", "S1__P1.gif", "S1__P1"):
        with pytest.raises(ValueError):
            delivery_from_name(bad)


# -- reassembly --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), size=st.integers(1, 400), rnd=st.randoms(use_true_random=False))
def test_any_order_and_duplication_reassembles_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, size: int, rnd: random.Random
) -> None:
    chunks = chunk_blob(data, time=T0, delivery="S1/P1", media_type="image/jpeg", chunk_bytes=size)
    sent = chunks + [rnd.choice(chunks) for _ in range(rnd.randrange(len(chunks) + 1))]
    rnd.shuffle(sent)
    blobs = Blobs(tmp_path_factory.mktemp("b") / "c.db.blobs")
    done: list[str] = []
    cut = rnd.randrange(len(sent) + 1)
    for part in (sent[:cut], sent[cut:]):  # in two batches, like two uplink batches
        done += blobs.take("VAN-1", records(part))
        if len(done) == 0:
            assert blobs.get("VAN-1", chunks[0].blob) is None  # nothing served before it is whole
    assert done == [chunks[0].blob]  # completed exactly once
    assert blobs.get("VAN-1", chunks[0].blob) == data
    assert blobs.take("VAN-1", records(sent)) == []  # late duplicates change nothing
    (row,) = blobs.list()
    assert row["complete"] and row["size"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    blobs.close()


def test_a_hash_mismatch_is_set_aside_never_served(tmp_path: Path) -> None:
    data = os.urandom(1000)
    chunks = chunk_blob(data, time=T0, delivery="S1/P1", media_type="image/jpeg", chunk_bytes=300)
    bad = chunks[2]
    chunks[2] = BlobChunk(
        bad.time, bad.blob, bad.index, bad.count, bad.sha256, bad.media_type, bad.delivery, b"x" * 300
    )
    blobs = Blobs(tmp_path / "c.db.blobs")
    assert blobs.take("VAN-1", records(chunks)) == []
    assert blobs.get("VAN-1", chunks[0].blob) is None
    assert [r["reason"] for r in blobs.list("VAN-1")] == [SHA256_MISMATCH]
    # another van's blob with the same id is its own
    assert blobs.take(
        "VAN-2",
        records(chunk_blob(data, time=T0, delivery="S1/P1", media_type="image/jpeg", chunk_bytes=300)),
    )
    blobs.close()


def test_chunks_that_disagree_are_set_aside(tmp_path: Path) -> None:
    chunks = chunk_blob(b"a" * 100, time=T0, delivery="S1/P1", media_type="image/jpeg", chunk_bytes=30)
    other = chunks[1]
    chunks[1] = BlobChunk(
        other.time,
        other.blob,
        other.index,
        other.count + 1,
        other.sha256,
        other.media_type,
        other.delivery,
        other.data,
    )
    blobs = Blobs(tmp_path / "c.db.blobs")
    assert blobs.take("VAN-1", records(chunks)) == []
    assert [r["reason"] for r in blobs.list()] == [INCONSISTENT]
    blobs.close()


# -- intake ------------------------------------------------------------------------------------


def outbox_blob(ob: Outbox) -> bytes:
    """The bytes of the chunks committed in the outbox, joined by index (read back from SQLite)."""
    parts = {}
    for seq, _, kind, body in ob.rows():
        if kind == "blob_chunk":
            c = convert.from_body(seq, kind, body).blob_chunk
            parts[c.index] = c.data
    return b"".join(parts[i] for i in sorted(parts))


def test_http_endpoint_takes_a_photo_and_refuses_oversized(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    intake = PhotoIntake(
        PhotosConfig(listen="127.0.0.1:0", chunk_bytes=1024, max_bytes=50_000), ob, lambda: T0
    )
    intake.start()
    photo = os.urandom(20_000)

    def post(
        body: bytes, query: str, ctype: str = "image/jpeg", length: int | None = None
    ) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection("127.0.0.1", intake.port, timeout=30)
        conn.putrequest("POST", f"/photos?{query}")
        conn.putheader("Content-Type", ctype)
        conn.putheader("Content-Length", str(len(body) if length is None else length))
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before the body
            conn.send(body)
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read())
        conn.close()
        return out

    try:
        status, answer = post(photo, "delivery=S1/P1")
        assert (
            status == 201 and answer["chunks"] == 20 and answer["sha256"] == hashlib.sha256(photo).hexdigest()
        )
        assert outbox_blob(ob) == photo  # committed before the answer
        status, answer = post(b"", "delivery=S1/P2", length=10_000_000)
        assert status == 413 and "max_bytes" in str(answer["error"])
        assert post(photo, "parcel=P1")[0] == 400
        assert post(photo, "delivery=S1/P1", ctype="text/plain")[0] == 415
        assert intake.rejects.as_dict() == {"too_large": 1, "no_delivery": 1, "bad_media_type": 1}
        assert outbox_blob(ob) == photo  # nothing refused reached the outbox
    finally:
        intake.stop()
        ob.close()


def test_inbox_file_is_taken_once_and_uploads_after_fixes(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    intake = PhotoIntake(
        PhotosConfig(inbox=inbox, chunk_bytes=1024), ob, lambda: T0
    )  # not started: scanned here
    photo = os.urandom(10_000)
    (inbox / "S3__P9.jpg").write_bytes(photo)
    (inbox / "S3__P9.gif").write_bytes(b"GIF89a")
    (inbox / "S3__P8.jpg.part").write_bytes(b"still being written")
    for i in range(5):
        ob.append(Fix(time=T0 + i, mode=3, lat=48.0, lon=11.0))
    assert intake.scan_inbox() == 1
    assert intake.scan_inbox() == 0  # taken once
    assert (inbox / "taken" / "S3__P9.jpg").read_bytes() == photo
    assert (inbox / "rejected" / "S3__P9.gif").exists() and (inbox / "S3__P8.jpg.part").exists()
    assert outbox_blob(ob) == photo
    tx = ob.batch(8)  # fixes were appended before the photo here, but a photo after them...
    assert tx is not None and [r.kind for r in tx.records][:5] == ["fix"] * 5
    for i in range(3):  # ... and fixes arriving after a photo backlog still go before it
        ob.append(Fix(time=T0 + 10 + i, mode=3, lat=48.0, lon=11.0))
    ob.flush()
    tx2 = ob.batch(3)
    assert tx2 is not None and [r.kind for r in tx2.records] == ["fix"] * 3
    ob.close()


# -- end to end --------------------------------------------------------------------------------


def blob_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dropline_cli", "blob", *args],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(pf.ROOT)),
        cwd=pf.ROOT,
        timeout=60,
    )


def test_photo_arrives_whole_once_across_outage_and_sigkill(tmp_path: Path) -> None:
    port = pf.free_port()
    db = tmp_path / "collector.db"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    photos = f'[photos]\ninbox = "{inbox}"\nchunk_bytes = 1024\npoll_s = 0.1\n'
    link = BlackholeProxy(port)  # the van's cellular link: cut it to stop the upload where it is
    config = pf.agent_config(
        tmp_path,
        "VAN-P",
        "grpc",
        f"127.0.0.1:{link.port}",
        sources=photos,
        outbox={"retain_acked": 1_000_000},
        uplink={"batch_records": 2, "window": 1, "ack_timeout_s": 2.0, "backoff_max_s": 0.5},
    )
    photo = os.urandom(400_000)  # 391 chunks of 1 KiB: about 196 batches of 2
    agent = pf.agent(tmp_path, config)
    coll = None
    try:
        (inbox / "S7__00340123450000000018.tmp").write_bytes(photo)
        os.replace(inbox / "S7__00340123450000000018.tmp", inbox / "S7__00340123450000000018.jpg")
        pf.wait_until(lambda: (inbox / "taken" / "S7__00340123450000000018.jpg").exists(), 60, "photo taken")
        assert (
            pf.outbox_count(tmp_path / "outbox.db", "kind = 'blob_chunk'") == 391
        )  # committed, no collector
        coll = pf.collector(tmp_path, db, grpc_port=port)
        acked = lambda: pf.outbox_acked(tmp_path / "outbox.db")  # noqa: E731
        pf.wait_until(lambda: acked() >= 8, 60, "part of the photo acked", interval=0.005)
        link.blackhole()  # the upload stops here (at most a window of 2 more chunks lands)
        agent.kill9()  # mid-upload
        assert pf.outbox_unacked(tmp_path / "outbox.db") > 0, "the photo went up before the kill"
        link.restore()
        agent = pf.agent(tmp_path, config)
        pf.wait_until(lambda: pf.outbox_unacked(tmp_path / "outbox.db") == 0, 120, "every chunk acked")
        listed = blob_cli("list", "--db", str(db))
        assert listed.returncode == 0, listed.stderr
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]  # once
        assert (
            row["complete"]
            and row["delivery"] == "S7/00340123450000000018"
            and row["media_type"] == "image/jpeg"
        )
        got = blob_cli(
            "get", "--db", str(db), "--vehicle", "VAN-P", row["blob"], "-o", str(tmp_path / "got.jpg")
        )
        assert got.returncode == 0, got.stderr
        assert (
            hashlib.sha256((tmp_path / "got.jpg").read_bytes()).hexdigest()
            == hashlib.sha256(photo).hexdigest()
        )
        missing = blob_cli("get", "--db", str(db), "--vehicle", "VAN-P", "nope", "-o", str(tmp_path / "x"))
        assert missing.returncode == 2 and b"unknown" in missing.stderr
    except BaseException:
        print(agent.tail(), coll.tail() if coll else "", sep="\n---\n")
        raise
    finally:
        agent.stop()
        if coll:
            coll.stop()
        link.close()
