"""Search at 10k, 100k and 1M chunks: recall and latency of our index (ANN + full text) against
exact numpy search plus one query embedding, measured in the same process, with build time and peak RSS.

    python benchmarks/search_latency.py [--rows 10000 100000 1000000] [--queries 200]
                                        [--questions evals/datasets/sample.jsonl]

Each size runs in its own process (so its peak RSS is its own) and prints its row when done; the
full table follows at the end. The index is built by the refresh's own maintenance
(`KnowledgeIndex._maintain_indexes`) with the production threshold, so 10k chunks have no ANN index.

The chunks are synthetic but shaped like real ones: each vector is a random mixture of two of
1500 real MiniLM embeddings plus Gaussian noise, renormalised (so they cluster the way text
embeddings do, around topics, which is what an IVF index relies on; uniform random vectors have
no clusters and make any ANN index look worse than on text, while a handful of clean topic
centroids would make it look better). Their text is generated from a help-center vocabulary so
the full-text index has realistic posting lists. Queries are real questions, embedded per query,
never rows of the table; recall@10 is against exact search over the same vectors.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.metrics import percentile  # noqa: E402
from knowledge.chunking import Chunk  # noqa: E402
from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import TABLE, KnowledgeIndex, chunk_schema, chunks_to_arrow  # noqa: E402
from knowledge.search import Searcher  # noqa: E402

WORDS = (
    "invoice refund payment card bank transfer ACH SEPA credit note dispute chargeback subscription plan "
    "upgrade downgrade seat user role admin viewer export import CSV API key webhook retry rate limit "
    "receipt expense OCR scan currency exchange tax VAT reverse charge reminder overdue late fee recurring "
    "schedule customer portal email delivery bounce domain SPF DKIM login password SSO SAML 2FA device "
    "mobile app offline sync report dashboard filter ledger reconciliation Stripe QuickBooks Xero Zapier"
).split()


def synthetic_corpus(embedder: Embedder, rows: int, seed: int = 7) -> tuple[list[Chunk], np.ndarray]:
    rng = np.random.default_rng(seed)
    base_texts = [" ".join(rng.choice(WORDS, size=12)) for _ in range(1500)]
    base = embedder.encode(base_texts)
    picks = rng.integers(0, len(base), size=(rows, 2))
    weights = rng.random((rows, 1)).astype(np.float32)
    vectors = weights * base[picks[:, 0]] + (1 - weights) * base[picks[:, 1]]
    vectors += rng.normal(0, 0.03, size=vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        Chunk(
            chunk_id=f"c{i}",
            doc_id=f"doc{i // 4}",
            source="synthetic",
            title=f"Article {i // 4}",
            url=f"https://help.example/{i // 4}",
            doc_url=f"https://help.example/{i // 4}",
            heading="",
            text=base_texts[picks[i, 0]] + " " + base_texts[picks[i, 1]],
            position=i % 4,
            doc_hash="x",
        )
        for i in range(rows)
    ]
    return chunks, vectors.astype(np.float32)


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, (time.perf_counter() - started) * 1000


def arguments(doc: str | None, rows: int, queries: int) -> argparse.Namespace:
    """--rows (one size), --queries and --questions, as benchmarks/s3_latency.py takes them."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--queries", type=int, default=queries)
    parser.add_argument("--questions", type=Path, default=Path("evals/datasets/sample.jsonl"))
    return parser.parse_args()


def real_queries(questions_file: Path, count: int) -> list[str]:
    """`count` queries from real questions (repeats get one vocabulary word more, so none is cached)."""
    questions = [json.loads(line)["question"] for line in questions_file.read_text().splitlines() if line.strip()]
    return [
        questions[i % len(questions)] + ("" if i < len(questions) else f" {WORDS[i % len(WORDS)]}")
        for i in range(count)
    ]


def measure(rows: int, n_queries: int, questions_path: Path) -> dict[str, Any]:
    """One size in this process: build the index the way a refresh does, then time and score the searches."""
    embedder = Embedder()
    chunks, vectors = synthetic_corpus(embedder, rows)
    work = Path(tempfile.mkdtemp(prefix="supportbot-latency-"))
    index = KnowledgeIndex(work / "index", embedder)  # production threshold: no ANN index below 50k rows
    started = time.perf_counter()
    index.db.create_table(TABLE, data=chunks_to_arrow(chunks, vectors), schema=chunk_schema())
    del chunks  # the table holds them now; keep peak RSS about the index, not two copies
    index._maintain_indexes()  # the same index maintenance a refresh runs
    build_seconds = time.perf_counter() - started
    plan = index.search_plan()
    print(f"{rows} chunks written and indexed in {build_seconds:.1f} s: {index.stats()['indexes']}", file=sys.stderr)

    queries = real_queries(questions_path, n_queries)
    searcher = Searcher(index)
    for query in queries[:5]:  # warm caches on both sides
        searcher.search(query, 10, mode="hybrid")

    # Each path runs over all queries in its own block: interleaving them lets one library's idle
    # threads (OpenBLAS spins after a matmul) steal the cores from the next one's timing.
    timed_vectors = [timed(embedder.encode_query, query) for query in queries]
    embed_ms = [ms for _, ms in timed_vectors]
    numpy_ms, exact_ids = [], []
    for query_vector, _ in timed_vectors:
        ids, ms = timed(lambda: np.argpartition(-(vectors @ query_vector), 10)[:10])  # noqa: B023 - called at once
        numpy_ms.append(ms)
        exact_ids.append(set(ids.tolist()))
    recalls = []
    for (query_vector, _), exact in zip(timed_vectors, exact_ids):
        ann_rows = index.vector_search(query_vector, 10)
        recalls.append(len({int(r["chunk_id"][1:]) for r in ann_rows} & exact) / 10)
    vector_ms = [timed(searcher.search, query, 10, mode="vector", per_doc=3)[1] for query in queries]
    hybrid_ms = [timed(searcher.search, query, 10, mode="hybrid")[1] for query in queries]
    baseline = [n + e for n, e in zip(numpy_ms, embed_ms)]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "rows": rows,
        "queries": n_queries,
        "index": f"{plan.kind} {plan.partitions} partitions, {plan.nprobes} probes, refine {plan.refine_factor}"
        if plan
        else "none (exact scan)",
        "build_s": build_seconds,
        "recall_mean": float(np.mean(recalls)),
        "recall_min": float(np.min(recalls)),
        "ms": {
            name: (percentile(values, 50), percentile(values, 95))
            for name, values in (
                ("numpy", numpy_ms),
                ("baseline", baseline),
                ("vector", vector_ms),
                ("hybrid", hybrid_ms),
            )
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_tables(results: list[dict[str, Any]]) -> None:
    print(
        "\nEvery latency includes the query embedding except 'numpy exact'; ratios are p95 over the p95 of "
        "numpy exact + embedding (the baseline), measured in the same process.\n"
    )
    print(
        "| chunks | vector index | recall@10 mean | worst query | numpy exact p50 / p95 ms | baseline p50 / p95 ms "
        "| vector p50 / p95 ms | hybrid p50 / p95 ms | vector p95 ratio | hybrid p95 ratio | build s | peak RSS MB |"
    )
    print("| --- " * 12 + "|")
    for r in results:
        ms = r["ms"]
        base95 = ms["baseline"][1]
        cells = [
            f"{r['rows']:,}",
            r["index"],
            f"{r['recall_mean']:.3f}",
            f"{r['recall_min']:.1f}",
            *(f"{ms[name][0]:.1f} / {ms[name][1]:.1f}" for name in ("numpy", "baseline", "vector", "hybrid")),
            f"{ms['vector'][1] / base95:.2f}",
            f"{ms['hybrid'][1] / base95:.2f}",
            f"{r['build_s']:.1f}",
            f"{r['peak_rss_mb']:,.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--questions", type=Path, default=Path("evals/datasets/sample.jsonl"))
    parser.add_argument("--one", action="store_true", help="measure the single --rows size here and print JSON")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.rows[0], args.queries, args.questions)))
        return
    results = []
    for rows in args.rows:  # one process per size: each peak RSS is that size's own
        command = [sys.executable, __file__, "--one", "--rows", str(rows), "--queries", str(args.queries)]
        command += ["--questions", str(args.questions)]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print_tables(results[-1:])  # each size as soon as it is done: the 1M run takes many minutes
    print_tables(results)


if __name__ == "__main__":
    main()
