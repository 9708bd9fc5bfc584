"""Photo reassembly in PostgreSQL (``cloud.blobs`` through ``cloud.sqldb``): two collectors sharing
one database take the chunks of one photo, interleaved, repeated and out of order, each on its
own connections and threads; the photo is complete once, and its bytes are the bytes chunked."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.photos import chunk_blob
from cloud.blobs import SHA256_MISMATCH, Blobs
from cloud.sqldb import SqlDb
from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import BlobChunk
from tests.postgres import Postgres, run_postgres

T0 = 1_410_325_200.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


def as_records(chunks: list[BlobChunk]) -> list[pb.Record]:
    return [convert.to_pb(i + 1, c) for i, c in enumerate(chunks)]


def test_two_collectors_reassemble_one_photo_once(postgres: Postgres) -> None:
    url = postgres.new_store_url("blobs")
    data = os.urandom(50_000)
    chunks = chunk_blob(data, time=T0, delivery="S1/P1", media_type="image/jpeg", chunk_bytes=997)
    rnd = random.Random(7)
    sent = chunks + [rnd.choice(chunks) for _ in range(20)]
    rnd.shuffle(sent)
    collectors = [Blobs(SqlDb(url)), Blobs(SqlDb(url))]
    completed: list[str] = []
    errors: list[BaseException] = []

    def take(blobs: Blobs, part: list[BlobChunk]) -> None:
        try:
            for i in range(0, len(part), 3):  # several small batches each, as vans send them
                completed.extend(blobs.take("VAN-1", as_records(part[i : i + 3])))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(collectors[n % 2], sent[n::4])) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert completed == [chunks[0].blob]  # completed by exactly one take, in one collector
    for blobs in collectors:
        got = blobs.get("VAN-1", chunks[0].blob)
        assert got == data and hashlib.sha256(got).hexdigest() == chunks[0].sha256
        [row] = blobs.list("VAN-1")
        assert row["complete"] and row["size"] == len(data) and row["parts"] == len(chunks)
    with psycopg.connect(url) as db:  # parts are dropped once joined: only the verified bytes stay
        assert db.execute("SELECT count(*) FROM blob_parts").fetchone() == (0,)
        assert db.execute("SELECT data FROM blobs").fetchone() == (data,)


def test_a_mismatch_is_never_served_from_postgres(postgres: Postgres) -> None:
    url = postgres.new_store_url("mismatch")
    chunks = chunk_blob(os.urandom(900), time=T0, delivery="S2/P1", media_type="image/png", chunk_bytes=300)
    bad = chunks[1]
    chunks[1] = BlobChunk(
        bad.time, bad.blob, bad.index, bad.count, bad.sha256, bad.media_type, bad.delivery, b"y" * 300
    )
    blobs = Blobs(SqlDb(url))
    assert blobs.take("VAN-1", as_records(chunks)) == []
    assert blobs.get("VAN-1", chunks[0].blob) is None
    assert [r["reason"] for r in blobs.list()] == [SHA256_MISMATCH]


def test_blob_and_config_push_cli_take_a_postgres_url(
    postgres: Postgres, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``dropline blob list|get --db URL`` read the photo a collector reassembled in PostgreSQL;
    ``dropline config push --db URL`` leaves the envelope in that database's pushed table."""
    from dropline_cli import main

    url = postgres.new_store_url("cli")
    data = os.urandom(5_000)
    chunks = chunk_blob(data, time=T0, delivery="S1/P1", media_type="image/jpeg", chunk_bytes=997)
    Blobs(SqlDb(url)).take("VAN-1", as_records(chunks))
    assert main(["blob", "list", "--db", url]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["blob"], row["complete"], row["size"]) == (chunks[0].blob, True, len(data))
    out = tmp_path / "photo.jpg"
    assert main(["blob", "get", "--db", url, "--vehicle", "VAN-1", chunks[0].blob, "-o", str(out)]) == 0
    assert out.read_bytes() == data
    envelope = json.dumps({"signed": base64.b64encode(json.dumps({"kind": "config"}).encode()).decode()})
    (tmp_path / "doc.json").write_bytes(envelope.encode())
    assert main(["config", "push", str(tmp_path / "doc.json"), "--db", url, "--vehicle", "VAN-1"]) == 0
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT vehicle, kind, envelope FROM pushed").fetchall()
    assert rows == [("VAN-1", "config", envelope.encode())]
