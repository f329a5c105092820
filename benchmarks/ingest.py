"""Ingest throughput: chunks per second through `refresh` against raw `model.encode`, same run.

    python benchmarks/ingest.py ../shared/datasets/anthropic-docs/kb.jsonl [--docs 80]

Both sides embed exactly the same chunk texts with the same model and batch size; the pipeline
side also loads, chunks, writes LanceDB and updates the full-text index, so the ratio is what
everything but the model costs. A third row times the self-calibration that a default refresh
runs after it (bot/engine/calibration.py), as a share of the refresh itself (target: at most 20%
for 1,000 chunks or more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engine.calibration import IndexCalibrator  # noqa: E402
from bot.settings import Settings  # noqa: E402
from knowledge.chunking import chunk_document, wordpiece_counter  # noqa: E402
from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.sources import load_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kb", type=Path, help="a JSONL knowledge export (contract format)")
    parser.add_argument("--docs", type=int, default=80, help="how many documents to ingest")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="supportbot-ingest-"))
    subset = work / "kb.jsonl"
    lines = [line for line in args.kb.read_text(encoding="utf-8").splitlines() if line.strip()][: args.docs]
    subset.write_text("\n".join(lines) + "\n", encoding="utf-8")

    embedder = Embedder(batch_size=args.batch_size)
    embedder.encode(["warm up the model"])
    count = wordpiece_counter(embedder.model_path)
    docs = load_path(str(subset), 10_000_000).documents
    texts = [chunk.embed_text for doc in docs for chunk in chunk_document(doc, count)]

    started = time.perf_counter()
    embedder.model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    raw_seconds = time.perf_counter() - started

    index = KnowledgeIndex(work / "index", embedder)
    started = time.perf_counter()
    report = asyncio.run(index.refresh([str(subset)], show_progress=False))
    pipeline_seconds = time.perf_counter() - started
    assert report.chunks_embedded == len(texts), (report.chunks_embedded, len(texts))

    settings = Settings(data_dir=work, _env_file=None)
    started = time.perf_counter()
    summary = asyncio.run(IndexCalibrator(settings)(index, index.serving_version()))
    calibration_seconds = time.perf_counter() - started

    raw_rate, pipeline_rate = len(texts) / raw_seconds, len(texts) / pipeline_seconds
    print(f"\n{len(docs)} documents, {len(texts)} chunks, batch size {args.batch_size}\n")
    print("| path | seconds | chunks/s | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| raw model.encode | {raw_seconds:.1f} | {raw_rate:.1f} | 1.00 |")
    print(
        f"| supportbot refresh (load, chunk, embed, write, index) | {pipeline_seconds:.1f} | {pipeline_rate:.1f} | {pipeline_rate / raw_rate:.2f} |"
    )
    print(
        f"| self-calibration after it ({summary and summary['pairs']} probe pairs) | {calibration_seconds:.1f} | | "
        f"{calibration_seconds / pipeline_seconds:.0%} of the refresh |"
    )
    print(
        json.dumps(
            {
                "chunks": len(texts),
                "raw_per_s": raw_rate,
                "pipeline_per_s": pipeline_rate,
                "ratio": pipeline_rate / raw_rate,
                "calibration_share": calibration_seconds / pipeline_seconds,
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
