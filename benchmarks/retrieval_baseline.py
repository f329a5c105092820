"""The bot's hybrid retrieval against a whole-article baseline, per domain and by question length.

    python benchmarks/retrieval_baseline.py KB CASES [KB CASES ...] [--data-dir /tmp/supportbot-bench-baseline]

KB is anything `supportbot refresh` takes (a kb.jsonl export, a folder of articles); CASES is a
JSONL eval set whose answerable cases name gold documents (ids or urls). For each domain:

- **hybrid**: the bot's `knowledge.search.Searcher` with its default settings over the index that
  the real `refresh` builds (chunks, document-level fusion), exactly what the pipeline retrieves with;
- **baseline**: one row per *article* (a kb record / a file, not a chunk): its embedding with the same
  all-MiniLM-L6-v2, BM25 over the whole article text (LanceDB full-text search, the same tokenizer,
  stemming and stop words as the bot's index, so only the granularity differs), fused by reciprocal
  rank fusion (k=60, equal weights, as the bot fuses). An article longer than the model's 256-word-piece
  window is embedded two ways: its first window (what the model keeps when it truncates: title and
  opening) and the mean of the embeddings of all its windows; both are measured and the fused
  baseline uses whichever scores higher on that domain (hit@5 + MRR@5), so the bar is the stronger one;
- each half of the baseline alone;
- the bot's Searcher with its document-level lists switched on (`doc_vector_weight` and
  `doc_fts_weight` 1.0: the mean of each document's chunk vectors, and its chunks' summed BM25),
  an option that is off by default.

Metrics are document level over answerable cases: hit@5 (any gold document among the top five
distinct documents) and MRR@5, for all questions and split at 30 words (long questions: a title plus
a pasted error message or stack trace). Ratios are against the fused baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import Settings  # noqa: E402
from evals.metrics import mean_scores, retrieval_scores  # noqa: E402
from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.search import Searcher, fts_query_text  # noqa: E402
from knowledge.sources import Document, load_source  # noqa: E402

K = 5
LONG_WORDS = 30  # a question this long is a title plus pasted output, not a one-liner
RRF_K = 60
WINDOW = 254  # word pieces per window: the model reads 256 including [CLS] and [SEP]

Ranking = list[list[str]]  # per rank, the keys of one document (id, url)


@dataclass
class Domain:
    name: str
    kb: Path
    cases: list[dict[str, Any]]


def load_cases(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row.get("gold_sources") and row.get("answerable", True)]


def domain_name(kb: Path) -> str:
    """`.../anthropic-docs/kb.jsonl` -> anthropic-docs, `examples/knowledge` -> knowledge."""
    return kb.parent.name if kb.is_file() else kb.name


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
    """Plain reciprocal rank fusion of lists of ids, equal weights; ties keep the first list's order."""
    scores: dict[str, float] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for list_no, ranking in enumerate(rankings):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
            first_seen.setdefault(key, (rank, list_no))
    return sorted(scores, key=lambda key: (-scores[key], first_seen[key]))


def article_text(doc: Document) -> str:
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


def windows(text: str, tokenizer, size: int = WINDOW) -> list[str]:
    """The article cut into consecutive windows the model reads whole."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= size:
        return [text]
    return [tokenizer.decode(ids[start : start + size]) for start in range(0, len(ids), size)]


def article_vectors(docs: list[Document], embedder: Embedder) -> dict[str, np.ndarray]:
    """Two embeddings per article: the first window (the model truncates) and the mean of all windows."""
    tokenizer = embedder.model.tokenizer
    first = embedder.encode([article_text(doc) for doc in docs])
    pieces = [windows(article_text(doc), tokenizer) for doc in docs]
    flat = embedder.encode([piece for doc_pieces in pieces for piece in doc_pieces])
    means = np.zeros_like(first)
    start = 0
    for row, doc_pieces in enumerate(pieces):
        mean = flat[start : start + len(doc_pieces)].mean(axis=0)
        means[row] = mean / (np.linalg.norm(mean) or 1.0)
        start += len(doc_pieces)
    print(f"  {sum(len(p) > 1 for p in pieces)} of {len(docs)} articles longer than one window", file=sys.stderr)
    return {"first window": first, "mean of windows": means}


class ArticleBaseline:
    """Whole articles: exact cosine over article vectors, LanceDB BM25 over article text."""

    def __init__(self, docs: list[Document], vectors: dict[str, np.ndarray], workdir: Path) -> None:
        import lancedb
        from lancedb.index import FTS

        self.docs = docs
        self.vectors = vectors
        self.keys = [[doc.doc_id, doc.url] for doc in docs]
        db = lancedb.connect(str(workdir))
        table = db.create_table(
            "articles", data=[{"row": i, "text": article_text(doc)} for i, doc in enumerate(docs)], mode="overwrite"
        )
        table.create_index("text", config=FTS(with_position=False, stem=True, remove_stop_words=True))
        self.table = table

    def vector(self, query_vector: np.ndarray, variant: str, limit: int = 50) -> list[int]:
        similarities = self.vectors[variant] @ query_vector
        return [int(i) for i in np.argsort(-similarities, kind="stable")[:limit]]

    def bm25(self, query: str, limit: int = 50) -> list[int]:
        text = fts_query_text(query)
        if not text:
            return []
        rows = (
            self.table.search(text, query_type="fts", fts_columns="text")
            .limit(limit)
            .select(["row", "_score"])
            .to_list()
        )
        return [int(row["row"]) for row in rows]

    def to_keys(self, rows: Sequence[int]) -> Ranking:
        return [self.keys[row] for row in rows]


def score(rankings: list[Ranking], cases: list[dict[str, Any]]) -> dict[str, float]:
    rows = [retrieval_scores(ranking, case["gold_sources"], K) for ranking, case in zip(rankings, cases)]
    result = mean_scores(rows)
    return {"hit": result.get(f"hit@{K}", 0.0), "mrr": result.get(f"mrr@{K}", 0.0), "n": len(rows)}


def bot_rankings(searcher: Searcher, cases: list[dict[str, Any]]) -> list[Ranking]:
    rankings = []
    for case in cases:
        hits = searcher.search(case["question"], K).hits
        rankings.append([[hit.doc_id, hit.doc_url, hit.url] for hit in hits])
    return rankings


def baseline_rankings(
    baseline: ArticleBaseline, cases: list[dict[str, Any]], embedder: Embedder
) -> dict[str, list[Ranking]]:
    methods: dict[str, list[Ranking]] = {}
    query_vectors = embedder.encode([case["question"] for case in cases])
    for query, vector in zip((case["question"] for case in cases), query_vectors):
        bm25 = baseline.bm25(query)
        methods.setdefault("article BM25", []).append(baseline.to_keys(bm25[:K]))
        for variant in baseline.vectors:
            vec = baseline.vector(vector, variant)
            methods.setdefault(f"article vector ({variant})", []).append(baseline.to_keys(vec[:K]))
            fused = rrf([[str(i) for i in vec], [str(i) for i in bm25]])
            methods.setdefault(f"RRF (vector {variant} + BM25)", []).append(
                baseline.to_keys([int(i) for i in fused[:K]])
            )
    return methods


def is_long(case: dict[str, Any]) -> bool:
    return len(case["question"].split()) >= LONG_WORDS


def measure(domain: Domain, data_root: Path, embedder: Embedder) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """Rows of (method, {subset: scores}); the fused baseline is the row named 'baseline'."""
    tag = hashlib.sha256(str(domain.kb.resolve()).encode()).hexdigest()[:8]
    settings = Settings(data_dir=data_root / f"{domain.name}-{tag}", _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    report = asyncio.run(index.refresh([str(domain.kb)]))
    print(f"{domain.name}: refresh {report.summary}", file=sys.stderr)
    searcher = Searcher.from_settings(settings, index)

    load = asyncio.run(load_source(str(domain.kb), max_bytes=settings.max_document_bytes))
    vectors = article_vectors(load.documents, embedder)
    with tempfile.TemporaryDirectory() as workdir:
        baseline = ArticleBaseline(load.documents, vectors, Path(workdir))
        methods = {"bot hybrid (Searcher, defaults)": bot_rankings(searcher, domain.cases)}
        with_documents = Searcher.from_settings(settings, index)
        with_documents.doc_vector_weight = with_documents.doc_fts_weight = 1.0
        methods["bot hybrid + document-level lists (option, off by default)"] = bot_rankings(
            with_documents, domain.cases
        )
        methods.update(baseline_rankings(baseline, domain.cases, embedder))

    subsets: dict[str, Callable[[dict[str, Any]], bool]] = {
        "all": lambda case: True,
        "short": lambda case: not is_long(case),
        "long": is_long,
    }
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method, rankings in methods.items():
        table[method] = {}
        for subset, keep in subsets.items():
            picked = [(r, c) for r, c in zip(rankings, domain.cases) if keep(c)]
            table[method][subset] = score([r for r, _ in picked], [c for _, c in picked])
    fused = [name for name in table if name.startswith("RRF")]
    best = max(fused, key=lambda name: table[name]["all"]["hit"] + table[name]["all"]["mrr"])
    rows = [(name, table[name]) for name in table if name != best]
    rows.insert(1, (f"**baseline** = {best}", table[best]))
    return rows


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "n/a"


def print_domain(domain: Domain, rows: list[tuple[str, dict[str, dict[str, float]]]]) -> None:
    base = rows[1][1]
    counts = {subset: int(scores["n"]) for subset, scores in base.items()}
    print(
        f"\n### {domain.name}: {counts['all']} answerable questions "
        f"({counts['short']} short, {counts['long']} of >= {LONG_WORDS} words)\n"
    )
    print(
        "| method | hit@5 | MRR@5 | hit@5 short | MRR@5 short | hit@5 long | MRR@5 long | hit / baseline | MRR / baseline |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, scores in rows:
        cells = []
        for subset in ("all", "short", "long"):
            if scores[subset]["n"]:
                cells += [f"{scores[subset]['hit']:.3f}", f"{scores[subset]['mrr']:.3f}"]
            else:
                cells += ["-", "-"]
        cells += [ratio(scores["all"]["hit"], base["all"]["hit"]), ratio(scores["all"]["mrr"], base["all"]["mrr"])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if counts["long"]:
        bot = rows[0][1]["long"]
        print(
            f"\nlong questions, bot / baseline: hit@5 {ratio(bot['hit'], base['long']['hit'])}, "
            f"MRR@5 {ratio(bot['mrr'], base['long']['mrr'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", type=Path, help="KB CASES [KB CASES ...]")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-baseline"))
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give KB and CASES in pairs")
    domains = [Domain(domain_name(kb), kb, load_cases(cases)) for kb, cases in zip(args.pairs[::2], args.pairs[1::2])]
    embedder = Embedder()
    for domain in domains:
        print_domain(domain, measure(domain, args.data_dir, embedder))


if __name__ == "__main__":
    main()
