"""Retrieval quality on a labelled corpus: full-text only, vector only and hybrid, side by side.

    python benchmarks/retrieval.py ../shared/datasets/anthropic-docs [--data-dir /tmp/bench-retrieval]

The knowledge is ingested through the real `refresh` (kb.jsonl), the questions are cases.jsonl,
and a hit counts when a retrieved document's id or url is gold (ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import Settings  # noqa: E402
from evals.metrics import mean_scores, retrieval_scores  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.search import Searcher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="folder with kb.jsonl and cases.jsonl")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-retrieval"))
    parser.add_argument("--kb", default="kb.jsonl")
    parser.add_argument("--cases", default="cases.jsonl")
    args = parser.parse_args()

    settings = Settings(data_dir=args.data_dir)
    index = KnowledgeIndex.from_settings(settings)
    report = asyncio.run(index.refresh([str(args.dataset / args.kb)]))
    print(f"refresh: {report.summary}", file=sys.stderr)
    cases = [json.loads(line) for line in (args.dataset / args.cases).read_text().splitlines() if line.strip()]
    cases = [case for case in cases if case.get("gold_sources")]
    searcher = Searcher.from_settings(settings, index)

    rows = []
    for mode in ("fts", "vector", "hybrid"):
        per_k = {3: [], 5: []}
        started = time.perf_counter()
        for case in cases:
            result = searcher.search(case["question"], 5, mode=mode)
            keys = [[hit.doc_id, hit.doc_url, hit.url] for hit in result.hits]
            for k in per_k:
                per_k[k].append(retrieval_scores(keys, case["gold_sources"], k))
        elapsed = (time.perf_counter() - started) / len(cases) * 1000
        scores = {**mean_scores(per_k[3]), **mean_scores(per_k[5])}
        rows.append((mode, scores, elapsed))

    print(f"\n{len(cases)} questions, {index.stats()['documents']} documents, {index.count_rows()} chunks\n")
    print("| mode | recall@3 | MRR@5 | hit@3 | recall@5 | nDCG@5 | ms/query |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, s, ms in rows:
        print(
            f"| {mode} | {s['recall@3']:.3f} | {s['mrr@5']:.3f} | {s['hit@3']:.3f} | {s['recall@5']:.3f} | {s['ndcg@5']:.3f} | {ms:.1f} |"
        )


if __name__ == "__main__":
    main()
