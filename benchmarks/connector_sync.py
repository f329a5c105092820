"""Connector sync throughput against raw embedding throughput of the same chunks, same run.

    nice python benchmarks/connector_sync.py [--docs 1000] [--rounds 2] [--max-chars 1200]
        [--kb ../shared/datasets/anthropic-docs/kb.jsonl]

A Zendesk Help Center emulator (tests/emulators/zendesk_api.py) serves `--docs` HTML articles
built from the knowledge export's texts, over real HTTP with its real page sizes. The sync row is a
first `refresh` of `zendesk+https://...` into an empty index: incremental export and listing,
HTML to Markdown, chunking, embedding, the LanceDB write and its full-text index. The raw row
encodes exactly the chunk texts that sync embedded, with the same model and batch size. The ratio
is sync throughput / raw throughput (target: at least 0.85). A second, no-change sync is timed
and its API calls and embeddings counted (expected: a few calls, 0 embeddings).
Rounds alternate sync and raw; the median of each is reported (the box is shared, so absolute
seconds are inflated; the ratio is what counts).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from tests.emulators.zendesk_api import ZendeskEmulator  # noqa: E402

URI = "zendesk+https://acme.zendesk.com/hc/en-us"
DEFAULT_KB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "anthropic-docs" / "kb.jsonl"


def article_html(text: str) -> str:
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip()]
    head, rest = (paragraphs[0], paragraphs[1:]) if paragraphs else ("", [])
    return f"<h2>{html.escape(head)}</h2>" + "".join(f"<p>{html.escape(p)}</p>" for p in rest)


def fill(api: ZendeskEmulator, kb: Path, count: int, max_chars: int) -> None:
    records = [json.loads(line) for line in kb.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number in range(count):
        record = records[number % len(records)]
        text = record["text"][:max_chars]
        api.add_article(f"{record['title']} ({number})", article_html(f"Article {number}.\n\n{text}"))


async def one_sync(embedder: Embedder, work: Path) -> tuple[float, list[str], KnowledgeIndex]:
    index = KnowledgeIndex(work / f"index-{time.monotonic_ns()}", embedder)
    started = time.perf_counter()
    report = await index.refresh([URI], show_progress=False)
    seconds = time.perf_counter() - started
    assert not report.failures, report.failures[:3]
    texts = index.table.to_lance().to_table(columns=["search_text"]).column("search_text").to_pylist()
    return seconds, texts, index


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="supportbot-connector-sync-"))
    embedder = Embedder(batch_size=args.batch_size)
    embedder.encode(["warm up the model"] * 64)
    try:
        async with ZendeskEmulator(export_page_size=1000) as api:
            api.add_user("bench@acme.test", "token", "agent")
            fill(api, args.kb, args.docs, args.max_chars)
            os.environ.update(
                {"ZENDESK_API_BASE": api.base_url, "ZENDESK_EMAIL": "bench@acme.test", "ZENDESK_API_TOKEN": "token"}
            )
            sync_times: list[float] = []
            raw_times: list[float] = []
            texts: list[str] = []
            index = None
            for _ in range(args.rounds):
                seconds, texts, index = await one_sync(embedder, work)
                sync_times.append(seconds)
                started = time.perf_counter()
                embedder.encode(texts)
                raw_times.append(time.perf_counter() - started)
            assert index is not None
            api.reset_counts()
            before = embedder.texts_encoded
            started = time.perf_counter()
            again = await index.refresh([URI], show_progress=False)
            nochange = time.perf_counter() - started
            calls, embedded = len(api.requests), embedder.texts_encoded - before
            assert again.chunks_embedded == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    chunks = len(texts)
    sync, raw = statistics.median(sync_times), statistics.median(raw_times)
    print(f"{args.docs} articles, {chunks} chunks, batch {args.batch_size}, {args.rounds} rounds (median)\n")
    print("| path | seconds | docs/s | chunks/s | vs raw |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| raw model.encode of the same chunks | {raw:.1f} | {args.docs / raw:.1f} | {chunks / raw:.1f} | 1.00 |")
    print(
        f"| first sync (HTTP + convert + chunk + embed + write) | {sync:.1f} | {args.docs / sync:.1f} | {chunks / sync:.1f} | {raw / sync:.2f} |"
    )
    print(f"| second sync, nothing changed | {nochange:.2f} | | | {calls} API calls, {embedded} embeddings |")
    print(f"\nsync throughput = {raw / sync:.0%} of raw embedding (target >= 85%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--kb", type=Path, default=DEFAULT_KB, help="JSONL export whose texts fill the articles")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-chars", type=int, default=1200, help="article text cut to this (a help article's size)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
