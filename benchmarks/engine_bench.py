"""Shared set-up for the answer-engine benchmarks: an indexed data dir, a pipeline, a case file.

The knowledge goes through the real `refresh` (incremental: a second run re-embeds nothing) and
questions through the real `Pipeline`, offline (extractive answerer) unless asked otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.engine.pipeline import Pipeline  # noqa: E402
from bot.engine.types import Answer, Question  # noqa: E402
from bot.settings import Settings  # noqa: E402

SAMPLE_KNOWLEDGE = ROOT / "examples" / "knowledge"
SAMPLE_CASES = ROOT / "evals" / "datasets" / "sample.jsonl"


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def offline_settings(data_dir: Path, source: str) -> Settings:
    """Benchmark settings: no .env, no API key (the offline answerer), one source."""
    return Settings(data_dir=data_dir, sources=[source], _env_file=None).model_copy(update={"anthropic_api_key": None})


async def indexed_pipeline(data_dir: Path, source: str, *, embedder=None) -> Pipeline:
    from bot.engine.calibration import refresh_calibrated
    from knowledge.index import KnowledgeIndex

    settings = offline_settings(data_dir, source)
    index = KnowledgeIndex.from_settings(settings, embedder)
    report = await refresh_calibrated(index, [source], settings)
    print(f"refresh {source}: {report.summary}", file=sys.stderr)
    print(f"calibration: {report.calibration}", file=sys.stderr)
    pipeline = Pipeline.from_settings(settings, index=index)
    await pipeline.warm_up()
    return pipeline


async def answer_all(pipeline: Pipeline, cases: list[dict[str, Any]]) -> list[Answer]:
    return [await pipeline.answer(Question(text=case["question"])) for case in cases]


def run(coro):
    return asyncio.run(coro)
