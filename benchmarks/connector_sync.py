"""Connector sync throughput against raw embedding throughput of the same chunks, same run.

    nice python benchmarks/connector_sync.py [--docs 1000] [--rounds 4] [--max-chars 1200] [--torch-threads 1]
        [--kb ../shared/datasets/anthropic-docs/kb.jsonl]

A Zendesk Help Center emulator (tests/emulators/zendesk_api.py), in a child process of its own so
its CPU is not billed to the sync, serves `--docs` HTML articles built from the knowledge export's
texts over real HTTP with its real page sizes. A sync phase is a first `refresh` of
`zendesk+https://...` into an empty index: incremental export and listing, HTML to Markdown,
chunking, embedding, the LanceDB write and its full-text index. A raw phase encodes exactly the
chunk texts that sync embedded, with the same model and batch size.

The box is shared, so the load changes from minute to minute. Each round therefore runs one raw
and one sync phase back to back (sync first in odd rounds, raw first in even ones, so a load that
rises or falls across a round favours neither), and the ratio raw / sync is taken per round, on
wall time and on this process's CPU time (user + sys of every thread: what the work cost, which
other processes' load inflates far less than wall time; with `--torch-threads 1` no idle torch
thread spin-waits on a busy core and bills it). The median per-round ratio is the figure
(target: at least 0.85). A last, no-change sync is timed and its API calls and embeddings counted
(expected: a few calls, 0 embeddings).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from tests.emulators.zendesk_api import ZendeskEmulator  # noqa: E402

URI = "zendesk+https://acme.zendesk.com/hc/en-us"
DEFAULT_KB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "anthropic-docs" / "kb.jsonl"
EMAIL, TOKEN = "bench@acme.test", "token"


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


async def serve_emulator(args: argparse.Namespace) -> None:
    """The child process: fill the emulator, print its base URL, serve until stdin closes."""
    async with ZendeskEmulator(export_page_size=1000) as api:
        api.add_user(EMAIL, TOKEN, "agent")
        fill(api, args.kb, args.docs, args.max_chars)
        print(api.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@dataclass
class Phase:
    wall: float
    cpu: float


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system  # this process, every thread (torch's and LanceDB's included)


async def sync_phase(embedder: Embedder, work: Path) -> tuple[Phase, list[str], KnowledgeIndex]:
    index = KnowledgeIndex(work / f"index-{time.monotonic_ns()}", embedder)
    wall, cpu = time.perf_counter(), cpu_seconds()
    report = await index.refresh([URI], show_progress=False)
    phase = Phase(time.perf_counter() - wall, cpu_seconds() - cpu)
    assert not report.failures, report.failures[:3]
    texts = index.table.to_lance().to_table(columns=["search_text"]).column("search_text").to_pylist()
    return phase, texts, index


def raw_phase(embedder: Embedder, texts: list[str]) -> Phase:
    wall, cpu = time.perf_counter(), cpu_seconds()
    embedder.encode(texts)
    return Phase(time.perf_counter() - wall, cpu_seconds() - cpu)


async def run(args: argparse.Namespace) -> None:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--docs", str(args.docs), "--kb", str(args.kb)]
        + ["--max-chars", str(args.max_chars)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    work = Path(tempfile.mkdtemp(prefix="supportbot-connector-sync-"))
    try:
        assert child.stdout is not None
        base_url = child.stdout.readline().strip()
        assert base_url.startswith("http://"), "the emulator did not start"
        os.environ.update({"ZENDESK_API_BASE": base_url, "ZENDESK_EMAIL": EMAIL, "ZENDESK_API_TOKEN": TOKEN})
        embedder = Embedder(batch_size=args.batch_size)
        embedder.encode(["warm up the model"] * 64)
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        rounds: list[tuple[Phase, Phase]] = []
        texts: list[str] = []  # the chunk texts every raw phase encodes: those the first sync embedded
        index = None
        for number in range(args.rounds):
            if number % 2 == 0:
                sync, synced, index = await sync_phase(embedder, work)
                texts = texts or synced
                raw = raw_phase(embedder, texts)
            else:
                raw = raw_phase(embedder, texts)
                sync, synced, index = await sync_phase(embedder, work)
            assert sorted(synced) == sorted(texts), "a sync embedded other texts than the raw phase"
            rounds.append((raw, sync))
            print(
                f"round {number + 1}: raw {raw.wall:.1f} s wall / {raw.cpu:.1f} s CPU, "
                f"sync {sync.wall:.1f} s / {sync.cpu:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        assert index is not None
        before = embedder.texts_encoded
        started = time.perf_counter()
        again = await index.refresh([URI], show_progress=False)
        nochange = time.perf_counter() - started
        embedded = embedder.texts_encoded - before
        assert again.chunks_embedded == 0
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    report(args, len(texts), rounds, nochange, again.api_calls, embedded)


def report(
    args: argparse.Namespace, chunks: int, rounds: list[tuple[Phase, Phase]], nochange: float, calls: int, embedded: int
) -> None:
    wall_ratios = [raw.wall / sync.wall for raw, sync in rounds]
    cpu_ratios = [raw.cpu / sync.cpu for raw, sync in rounds]
    threads = args.torch_threads or "default"
    print(
        f"{args.docs} articles, {chunks} chunks, batch {args.batch_size}, torch threads {threads}, {args.rounds} interleaved rounds\n"
    )
    print("| round | order | raw wall s | sync wall s | wall ratio | raw CPU s | sync CPU s | CPU ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for number, ((raw, sync), wall, cpu) in enumerate(zip(rounds, wall_ratios, cpu_ratios, strict=True)):
        order = "sync, raw" if number % 2 == 0 else "raw, sync"
        print(
            f"| {number + 1} | {order} | {raw.wall:.1f} | {sync.wall:.1f} | {wall:.2f} "
            f"| {raw.cpu:.1f} | {sync.cpu:.1f} | {cpu:.2f} |"
        )
    wall, cpu = statistics.median(wall_ratios), statistics.median(cpu_ratios)
    print(f"| median | | | | **{wall:.2f}** | | | **{cpu:.2f}** |")
    print(f"\nsecond sync, nothing changed: {nochange:.2f} s, {calls} API calls, {embedded} embeddings")
    print(f"sync throughput = {wall:.0%} of raw embedding on wall time, {cpu:.0%} on CPU time (target >= 85%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--kb", type=Path, default=DEFAULT_KB, help="JSONL export whose texts fill the articles")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-chars", type=int, default=1200, help="article text cut to this (a help article's size)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (default: torch's choice); 1 keeps spin-waiting threads out of CPU time",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the emulator's child process
    args = parser.parse_args()
    asyncio.run(serve_emulator(args) if args.serve else run(args))


if __name__ == "__main__":
    main()
