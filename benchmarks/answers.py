"""Answer correctness of the offline (extractive) answerer against reference answers.

    python benchmarks/answers.py ../shared/datasets/anthropic-docs [--data-dir /tmp/...] [--limit N]

Indexes kb.jsonl through the real `refresh`, answers every case of cases.jsonl through the real
pipeline, and compares each answer (markers removed) with `reference_answer`: token F1
(evals/metrics.py) and the cosine similarity of their embeddings (the same MiniLM model as the
index). Also checks faithfulness: every citation's cited_text is verbatim in its chunk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import answer_all, indexed_pipeline, load_jsonl, run  # noqa: E402

from evals.metrics import percentile, token_f1  # noqa: E402
from knowledge.text import strip_markers  # noqa: E402


def faithful(answer) -> bool:
    chunks = {chunk.chunk_id: chunk.text for chunk in answer.retrieved}
    return all(c.cited_text in chunks.get(c.chunk_id, "") for c in answer.citations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="folder with kb.jsonl and cases.jsonl")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-answers"))
    parser.add_argument("--kb", default="kb.jsonl")
    parser.add_argument("--cases", default="cases.jsonl")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases")
    args = parser.parse_args()

    pipeline = run(indexed_pipeline(args.data_dir, str(args.dataset / args.kb)))
    cases = [c for c in load_jsonl(args.dataset / args.cases) if c.get("reference_answer")]
    cases = cases[: args.limit] if args.limit else cases
    answers = run(answer_all(pipeline, cases))

    texts = [strip_markers(a.text) for a in answers]
    references = [c["reference_answer"] for c in cases]
    f1 = [token_f1(t, r) for t, r in zip(texts, references)]
    embedder = pipeline.searcher.index.embedder
    vectors = embedder.encode(texts + references)
    cosine = (vectors[: len(texts)] * vectors[len(texts) :]).sum(axis=1)
    gold_cited = [
        any(c.doc_id in case["gold_sources"] or c.url in case["gold_sources"] for c in a.citations)
        for a, case in zip(answers, cases)
    ]
    words = [len(t.split()) for t in texts]

    print(f"\n{len(cases)} answerable cases, extractive answerer, k={pipeline.settings.answer_k} documents\n")
    print("| metric | mean | median |")
    print("| --- | --- | --- |")
    print(f"| token F1 vs reference | {np.mean(f1):.3f} | {percentile(f1, 50):.3f} |")
    print(f"| embedding cosine vs reference | {np.mean(cosine):.3f} | {percentile(list(cosine), 50):.3f} |")
    print(f"| answers citing a gold source | {np.mean(gold_cited):.0%} | |")
    print(f"| faithful (cited text verbatim in chunk) | {np.mean([faithful(a) for a in answers]):.0%} | |")
    print(f"| answer length, words | {np.mean(words):.0f} | {percentile(words, 50):.0f} |")


if __name__ == "__main__":
    main()
