"""The knowledge index on object storage (SUPPORTBOT_INDEX_URI=s3://…), against moto's S3 server.

Real LanceDB and pyarrow S3 clients over HTTP: refresh into the bucket, search from it, tags and
rollback, the sidecar files (refresh log, calibrations, gate reports, cursors) kept as objects,
the writer rule, and a second process that picks up a new version without a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.engine import calibration
from bot.engine.calibration import Calibration
from bot.settings import Settings
from evals.gate import load_report, save_report
from knowledge.connectors.state import read_states, write_states
from knowledge.index import LOG_NAME, IndexReadOnly, KnowledgeIndex, RefreshInProgress
from knowledge.search import Searcher
from knowledge.storage import LocalSidecar, ObjectSidecar, object_store_options
from tests.test_knowledge_index import ARTICLES, make_folder

ROOT = Path(__file__).resolve().parents[1]
CONSISTENCY_SECONDS = 1.0


def s3_settings(tmp_path: Path, uri: str, **extra) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        index_uri=uri,
        read_consistency_seconds=CONSISTENCY_SECONDS,
        _env_file=None,
        **extra,
    )


def refresh(index: KnowledgeIndex, folder: Path):
    return asyncio.run(index.refresh([str(folder)]))


def test_storage_options_come_from_the_standard_aws_variables():
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://minio:9000",
    }
    assert object_store_options("s3://bucket/prefix", environ) == {
        "aws_access_key_id": "AKIA",
        "aws_secret_access_key": "secret",
        "region": "eu-west-1",
        "endpoint": "http://minio:9000",
        "allow_http": "true",
    }
    https = object_store_options("s3://bucket", {"AWS_REGION": "us-east-2", "AWS_ENDPOINT_URL": "https://s3.example"})
    assert "allow_http" not in https and https["region"] == "us-east-2"
    for bad in ("ftp://bucket/x", "s3://", "memory://x"):
        with pytest.raises(ValueError, match="unsupported index URI"):
            object_store_options(bad, {})
    with pytest.raises(ValueError, match="unsupported index URI"):  # named when the settings load
        Settings(index_uri="s3://", _env_file=None)


def test_refresh_search_tag_and_rollback_with_the_index_on_s3(tmp_path, embedder, s3_index_uri):
    settings = s3_settings(tmp_path, s3_index_uri, index_single_writer=True)
    index = KnowledgeIndex.from_settings(settings, embedder)
    assert index.remote and isinstance(index.sidecar, ObjectSidecar)
    folder = make_folder(tmp_path / "kb")
    first = refresh(index, folder)
    assert (first.total("added"), first.total("failed")) == (4, 0)

    hits = Searcher(index).search("How many API requests per minute are allowed?", 3).hits
    assert hits and hits[0].doc_id == "api.md"

    (folder / "sso.md").write_text(ARTICLES["sso.md"] + "\nSCIM provisioning works with Okta.", encoding="utf-8")
    second = refresh(index, folder)
    assert second.total("updated") == 1 and second.version_after > first.version_after
    assert [version for version, _ in index._tags()] == [first.version_after, second.version_after]
    assert index.stats()["last_refresh"]["version_after"] == second.version_after  # the log, read from S3

    assert index.rollback() == (second.version_after, first.version_after)
    assert index.serving_version() == first.version_after
    sso = [row["text"] for row in index.table.to_arrow().to_pylist() if row["doc_id"] == "sso.md"]
    assert sso and not any("SCIM" in text for text in sso)
    log = [json.loads(line) for line in (index.sidecar.read_text(LOG_NAME) or "").splitlines()]
    assert [entry.get("rollback", False) for entry in log] == [False, False, True]

    # a fresh process (a new connection) finds the same index and history in the bucket
    reopened = KnowledgeIndex.from_settings(settings, embedder)
    assert reopened.serving_version() == first.version_after and reopened.count_rows() == index.count_rows()
    assert not (tmp_path / "data" / "index").exists()  # nothing was written to local disk


@pytest.mark.parametrize("store", ["local", "s3"])
def test_sidecar_files_round_trip(store, tmp_path, embedder, s3_index_uri):
    uri = str(tmp_path / "index") if store == "local" else s3_index_uri
    sidecar = KnowledgeIndex(uri, embedder).sidecar
    assert isinstance(sidecar, LocalSidecar if store == "local" else ObjectSidecar)
    assert sidecar.read_text("absent.json") is None and sidecar.names("calibration") == []

    for version in (3, 7):
        made = Calibration(index_version=version, raw_escalate=0.2, raw_answer=0.5, separation_auroc=0.8, probes=[])
        calibration.save(sidecar, made)
    assert calibration.load(sidecar, 7).raw_answer == 0.5
    assert calibration.latest(sidecar, before=5).index_version == 3
    assert sidecar.names("calibration") == ["v3.json", "v7.json"]  # no temporary objects left behind

    write_states(sidecar, {"notion://x": {"cursor": "a"}})
    write_states(sidecar, {"notion://x": {"cursor": "b"}})  # replaced whole
    assert read_states(sidecar) == {"notion://x": {"cursor": "b"}}

    report = {"config": {"dataset_sha256": "abc"}, "metrics": {}, "rows": []}
    save_report(sidecar, 7, report)
    assert load_report(sidecar, 7, "abc") is not None and load_report(sidecar, 7, "other") is None

    sidecar.append_line("log.jsonl", '{"n": 1}')
    sidecar.append_line("log.jsonl", '{"n": 2}')
    assert sidecar.read_text("log.jsonl") == '{"n": 1}\n{"n": 2}\n'
    sidecar.delete("log.jsonl")
    sidecar.delete("log.jsonl")  # deleting what is gone is fine
    assert sidecar.read_text("log.jsonl") is None


def test_two_writers_of_one_local_sidecar_file_never_collide(tmp_path):
    """A bot saving term statistics while a refresh saves the same version's: each write has its own
    temporary file, so neither renames the other's away (a shared temporary made os.replace fail)."""
    from concurrent.futures import ThreadPoolExecutor

    sidecar = LocalSidecar(tmp_path / "index")

    def write_many(writer: int) -> None:
        for n in range(300):
            sidecar.write_text("terms/v3.json", json.dumps({"writer": writer, "n": n}))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write_many, range(4)))  # raises here if a rename lost its temporary
    assert json.loads(sidecar.read_text("terms/v3.json") or "")["n"] == 299
    assert sidecar.names("terms") == ["v3.json"]  # no temporary left behind


def test_an_s3_index_is_written_only_under_a_writer_rule(tmp_path, embedder, s3_index_uri, postgres_server):
    from bot.coordination import open_index
    from bot.postgres.coordination import index_writer_lock

    folder = make_folder(tmp_path / "kb")
    no_rule = KnowledgeIndex.from_settings(s3_settings(tmp_path, s3_index_uri), embedder)
    with pytest.raises(IndexReadOnly, match="SUPPORTBOT_INDEX_SINGLE_WRITER"):
        refresh(no_rule, folder)
    with pytest.raises(IndexReadOnly):
        no_rule.rollback()
    assert not no_rule.exists()

    database_url = postgres_server.create_database()
    shared = s3_settings(tmp_path, s3_index_uri, database_url=database_url)
    writer = open_index(shared, embedder)
    with index_writer_lock(database_url)():  # another replica is writing
        with pytest.raises(RefreshInProgress, match="another replica"):
            refresh(writer, folder)
    assert refresh(writer, folder).total("added") == 4  # the lock is free again


READER = """
import json, sys
from bot.settings import Settings
from knowledge.index import KnowledgeIndex
index = KnowledgeIndex.from_settings(Settings(_env_file=None))
for line in sys.stdin:
    print(json.dumps({"version": index.version, "serving": index.serving_version(),
                      "docs": sorted(doc for _, doc in index.doc_hashes())}), flush=True)
"""


def test_a_second_process_sees_a_new_version_within_the_consistency_interval(tmp_path, embedder, s3_index_uri):
    settings = s3_settings(tmp_path, s3_index_uri, index_single_writer=True)
    writer = KnowledgeIndex.from_settings(settings, embedder)
    folder = make_folder(tmp_path / "kb")
    first = refresh(writer, folder)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SUPPORTBOT_INDEX_URI": s3_index_uri,
        "SUPPORTBOT_READ_CONSISTENCY_SECONDS": str(CONSISTENCY_SECONDS),
    }
    reader = subprocess.Popen(
        [sys.executable, "-c", READER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:

        def ask() -> dict:
            assert reader.stdin and reader.stdout
            reader.stdin.write("?\n")
            reader.stdin.flush()
            return json.loads(reader.stdout.readline())

        assert ask()["version"] == first.version_after
        (folder / "billing.md").write_text("# Billing\nInvoices are emailed on the first day.", encoding="utf-8")
        second = refresh(writer, folder)
        published = time.monotonic()
        while (seen := ask())["version"] != second.version_after:
            assert time.monotonic() - published < CONSISTENCY_SECONDS + 10, seen  # + slack for a loaded box
            time.sleep(0.1)
        waited = time.monotonic() - published
        assert seen["serving"] == second.version_after and "billing.md" in seen["docs"]
        print(f"the reader saw version {second.version_after} {waited:.2f} s after it was published")
    finally:
        reader.kill()
        reader.wait()
