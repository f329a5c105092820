"""Query latency from an index on object storage (S3 API) against the same index on local disk, same run.

    python benchmarks/s3_latency.py [--rows 20000] [--queries 100]

The S3 API is moto's server on this machine (tests/engines/s3.py), so this measures what the object
store path costs in requests and parsing (LanceDB reading manifests and fragments over HTTP), not
network latency to a real region: add a round trip or more per uncached read for that. Both sides
hold the same synthetic chunks (benchmarks/search_latency.py) and answer the same real questions;
query vectors are embedded once up front, so the rows time the index alone. "consistency 0 s" checks
the store for a new version before every query; "5 s" is the default SUPPORTBOT_READ_CONSISTENCY_SECONDS.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.search_latency import arguments, real_queries, synthetic_corpus, timed  # noqa: E402
from evals.metrics import percentile  # noqa: E402
from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import TABLE, KnowledgeIndex, chunk_schema, chunks_to_arrow  # noqa: E402
from tests.engines.s3 import start_s3  # noqa: E402


def main() -> None:
    args = arguments(__doc__, rows=20_000, queries=100)

    s3 = start_s3()
    os.environ.update(s3.environ())
    embedder = Embedder()
    chunks, vectors = synthetic_corpus(embedder, args.rows)
    work = Path(tempfile.mkdtemp(prefix="supportbot-s3-latency-"))
    uri = f"s3://{s3.create_bucket()}/knowledge"
    build: dict[str, float] = {}
    for name, location in (("local disk", str(work / "index")), ("S3 (moto)", uri)):
        index = KnowledgeIndex(location, embedder, vector_index_min_rows=min(50_000, args.rows))
        started = time.perf_counter()
        index.db.create_table(TABLE, data=chunks_to_arrow(chunks, vectors), schema=chunk_schema())
        index._maintain_indexes()  # the same index maintenance a refresh runs
        build[name] = time.perf_counter() - started

    queries = real_queries(args.questions, args.queries)
    query_vectors = [embedder.encode_query(query) for query in queries]

    results = []
    for name, location, consistency in (
        ("local disk", str(work / "index"), 5.0),
        ("S3 (moto), consistency 5 s", uri, 5.0),
        ("S3 (moto), consistency 0 s", uri, 0.0),
    ):
        index = KnowledgeIndex(location, embedder, read_consistency_seconds=consistency)
        _, open_ms = timed(lambda: index.vector_search(query_vectors[0], 10))  # noqa: B023 - called at once
        vector_ms = [timed(index.vector_search, vector, 10)[1] for vector in query_vectors]
        fts_ms = [timed(index.fts_search, query, 10)[1] for query in queries]
        results.append((name, open_ms, vector_ms, fts_ms))

    base_vector, base_fts = percentile(results[0][2], 95), percentile(results[0][3], 95)
    print(
        f"\n{args.rows} chunks, {len(queries)} queries (vectors embedded up front); written in "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in build.items())
        + "\n"
    )
    print(
        "| index | first query ms | vector p50 ms | vector p95 ms | full-text p50 ms | full-text p95 ms | p95 ratio to local (vector / full-text) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, open_ms, vector_ms, fts_ms in results:
        print(
            f"| {name} | {open_ms:.0f} | {percentile(vector_ms, 50):.1f} | {percentile(vector_ms, 95):.1f} | "
            f"{percentile(fts_ms, 50):.1f} | {percentile(fts_ms, 95):.1f} | "
            f"{percentile(vector_ms, 95) / base_vector:.2f} / {percentile(fts_ms, 95) / base_fts:.2f} |"
        )
    shutil.rmtree(work, ignore_errors=True)
    s3.stop()


if __name__ == "__main__":
    main()
