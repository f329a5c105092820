"""Shared fixtures: one embedding model per test session, and a sample index built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for name in ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
    os.environ.pop(name, None)  # tests decide explicitly what is configured

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_KNOWLEDGE = ROOT / "examples" / "knowledge"
SAMPLE_EVALS = ROOT / "evals" / "datasets" / "sample.jsonl"


@pytest.fixture(scope="session")
def embedder():
    from knowledge.embeddings import Embedder

    return Embedder()


@pytest.fixture
def settings(tmp_path):
    from bot.settings import Settings

    return Settings(data_dir=tmp_path / "data", sources=[str(SAMPLE_KNOWLEDGE)], _env_file=None)


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory, embedder):
    """A data dir whose index holds examples/knowledge; built once, read by many tests."""
    import asyncio

    from bot.engine.calibration import calibrator_for
    from bot.settings import Settings
    from knowledge.index import KnowledgeIndex

    data_dir = tmp_path_factory.mktemp("sample-data")
    settings = Settings(data_dir=data_dir, sources=[str(SAMPLE_KNOWLEDGE)], _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    report = asyncio.run(index.refresh(settings.sources, after_write=calibrator_for(settings)))  # as a user's refresh
    assert report.calibration is not None
    assert report.total("failed") == 0, report.failures
    return data_dir


@pytest.fixture
def sample_settings(sample_data_dir):
    """Settings pointing at the shared sample index (read-only use)."""
    from bot.settings import Settings

    return Settings(data_dir=sample_data_dir, sources=[str(SAMPLE_KNOWLEDGE)], _env_file=None)


@pytest.fixture(scope="session")
def sample_index(sample_data_dir, embedder):
    from bot.settings import Settings
    from knowledge.index import KnowledgeIndex

    settings = Settings(data_dir=sample_data_dir, _env_file=None)
    return KnowledgeIndex.from_settings(settings, embedder)


@pytest.fixture(scope="session")
def sample_searcher(sample_index):
    from knowledge.search import Searcher

    return Searcher(sample_index)


@pytest.fixture(scope="session")
def engine_parts(sample_index, sample_searcher, embedder):
    """The shared sample index, searcher and model, for tests that build a whole bot around them."""
    return {"index": sample_index, "searcher": sample_searcher, "embedder": embedder}


def engine_for_the_session(start, name: str):
    """A real engine, stopped after the session; the test is skipped with the reason it cannot start."""
    from tests.engines.postgres import EngineUnavailable

    try:
        server = start()
    except EngineUnavailable as exc:
        pytest.skip(f"{name} unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the session."""
    from tests.engines.postgres import start_postgres

    yield from engine_for_the_session(start_postgres, "PostgreSQL")


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database with the schema migrated (what `supportbot db upgrade` does)."""
    from bot.postgres.migrations import upgrade

    url = postgres_server.create_database()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def s3_server():
    """One S3 API (moto in server mode) for the session."""
    from tests.engines.s3 import start_s3

    yield from engine_for_the_session(start_s3, "S3 (moto server)")


@pytest.fixture
def s3_index_uri(s3_server, monkeypatch):
    """An empty s3:// prefix in a fresh bucket, with the AWS variables that reach it set."""
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.create_bucket()}/knowledge"
