"""Search latency at 100k chunks: our index (ANN + full text) against exact numpy search, same run.

    python benchmarks/search_latency.py [--rows 100000] [--queries 200] [--questions evals/datasets/sample.jsonl]

The 100k chunks are synthetic but shaped like real ones: their vectors are noisy mixtures of
real MiniLM embeddings of generated sentences (so they cluster the way text does, which is what
an IVF index relies on), and their text is generated from a help-center vocabulary so the
full-text index has realistic posting lists. Queries are real questions, embedded per query.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

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
    """--rows, --queries and --questions, shared with benchmarks/s3_latency.py."""
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


def main() -> None:
    args = arguments(__doc__, rows=100_000, queries=200)

    embedder = Embedder()
    chunks, vectors = synthetic_corpus(embedder, args.rows)
    work = Path(tempfile.mkdtemp(prefix="supportbot-latency-"))
    index = KnowledgeIndex(work / "index", embedder, vector_index_min_rows=min(50_000, args.rows))
    started = time.perf_counter()
    index.db.create_table(TABLE, data=chunks_to_arrow(chunks, vectors), schema=chunk_schema())
    index._maintain_indexes()  # the same index maintenance a refresh runs
    build_seconds = time.perf_counter() - started
    print(
        f"{args.rows} chunks written and indexed in {build_seconds:.1f} s: {index.stats()['indexes']}", file=sys.stderr
    )

    queries = real_queries(args.questions, args.queries)
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
    for query, exact in zip(queries, exact_ids):
        ann_rows = index.vector_search(embedder.encode_query(query), 10)
        recalls.append(len({int(r["chunk_id"][1:]) for r in ann_rows} & exact) / 10)
    vector_ms = [timed(searcher.search, query, 10, mode="vector", per_doc=3)[1] for query in queries]
    hybrid_ms = [timed(searcher.search, query, 10, mode="hybrid")[1] for query in queries]

    baseline = [n + e for n, e in zip(numpy_ms, embed_ms)]
    print(
        f"\n{args.rows} chunks, {len(queries)} queries, 384-d vectors; every row includes the query embedding except 'numpy exact (no embedding)'\n"
    )
    print("| search | p50 ms | p95 ms | p95 ratio to numpy exact + embedding |")
    print("| --- | --- | --- | --- |")
    rows = [
        ("numpy exact (no embedding)", numpy_ms),
        ("numpy exact + embedding (baseline)", baseline),
        ("supportbot vector (ANN index)", vector_ms),
        ("supportbot hybrid (ANN + full text, fused)", hybrid_ms),
    ]
    p95_base = percentile(baseline, 95)
    for name, values in rows:
        print(
            f"| {name} | {percentile(values, 50):.1f} | {percentile(values, 95):.1f} | {percentile(values, 95) / p95_base:.2f} |"
        )
    print(f"\nANN recall@10 against exact: {np.mean(recalls):.3f} (min {np.min(recalls):.1f})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
