"""How refresh cost grows with the index: a no-op refresh and a one-document edit at 10k, 100k and 1M chunks.

For each size, a JSONL help-center export of N/10 articles (ten sections each) is written, and the
index is built from it through the refresh's own planner (`KnowledgeIndex._plan`: the same loader,
fingerprints and chunker) with seeded random unit vectors in place of embeddings (embedding a
million chunks takes about nine hours on two cores), written with the index's own Arrow schema,
then given its full-text and vector indexes as a refresh would. Because the index holds exactly
what the export says, refreshing from the export is a true no-op.

Each measured refresh runs in its own child process (the real `KnowledgeIndex.refresh`, real
embedder for the edited article), which reports the refresh's seconds and its peak RSS (VmHWM).
Reference rows, in the same run and on the same index: the pre-change way of reading the
hashes (one projected `to_table` of every row, turned into Python), and a full scan of every
column (what a refresh must never do).

    nice python benchmarks/refresh_scale.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTIONS = 10
WORDS_PER_SECTION = 45
BUILD_BATCH_DOCUMENTS = 5_000
VOCABULARY = (
    "account billing invoice refund export import password login token webhook plan seat admin "
    "role team workspace project report dashboard filter search alert email domain sso saml "
    "audit log retention backup restore limit quota upgrade downgrade trial coupon tax receipt "
    "card payment failure retry sync connector api key scope permission channel message thread"
).split()


def article(number: int, edited: bool = False) -> dict[str, Any]:
    rng = random.Random(number)
    sections = []
    for section in range(SECTIONS):
        words = " ".join(rng.choice(VOCABULARY) for _ in range(WORDS_PER_SECTION))
        sections.append(f"## Topic {section} of article {number}\n\n{words.capitalize()}.")
    if edited:
        sections.append("## What changed\n\nThis article was edited to measure a one-document refresh.")
    return {
        "id": f"a{number}",
        "title": f"Article {number}",
        "url": f"https://help.example/a{number}",
        "text": "\n\n".join(sections),
    }


def write_source(path: Path, documents: int, edited: frozenset[int] = frozenset()) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(documents):
            handle.write(json.dumps(article(number, number in edited)) + "\n")


def build(index_dir: Path, source: Path) -> tuple[int, float]:
    """The index the export describes, via the refresh planner, with synthetic vectors."""
    import numpy as np

    from knowledge.embeddings import DIMENSIONS, Embedder
    from knowledge.index import TABLE, TAG_PREFIX, KnowledgeIndex, RefreshReport, chunks_to_arrow

    started = time.perf_counter()
    index = KnowledgeIndex(index_dir, Embedder())
    load, documents = asyncio.run(index.open_stream(str(source), {}))
    rng = np.random.default_rng(0)
    batch: list[Any] = []
    written = 0

    def flush() -> None:
        nonlocal written
        if not batch:
            return
        vectors = rng.standard_normal((len(batch), DIMENSIONS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        data = chunks_to_arrow(batch, vectors)
        if written == 0:
            index.db.create_table(TABLE, data=data)
        else:
            index.table.add(data)
        written += len(batch)
        batch.clear()

    for chunks in index._plan([(load, documents)], RefreshReport(), {}):
        batch.extend(chunks)
        if len(batch) >= BUILD_BATCH_DOCUMENTS * SECTIONS:
            flush()
    flush()
    index._maintain_indexes()
    index.table.tags.create(f"{TAG_PREFIX}{index.table.version}", index.table.version)
    return written, time.perf_counter() - started


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, index_dir: Path, source: Path) -> dict[str, Any]:
    """One measurement, in a fresh process so its peak RSS is its own. `seconds` is the work itself
    with the libraries imported, the table opened and (for an edit) the model loaded, as in a
    running bot; `process_seconds` adds those (a one-shot `supportbot refresh`)."""
    process_started = time.perf_counter()
    from knowledge.embeddings import Embedder
    from knowledge.index import HASH_COLUMNS, KnowledgeIndex

    index = KnowledgeIndex(index_dir, Embedder())
    result: dict[str, Any] = {"mode": mode}
    index.table  # noqa: B018  # imports lancedb and opens the table: seconds on a loaded box
    if mode == "edit":
        index.embedder.encode(["warm up"])  # torch and the model, as a running bot has them
        index.embedder.texts_encoded = 0
    if mode in ("noop", "edit"):
        hashes_started = time.perf_counter()
        index.doc_hashes(str(source.resolve()))
        result["hash_read_seconds"] = time.perf_counter() - hashes_started
    started = time.perf_counter()
    if mode in ("noop", "edit"):
        report = asyncio.run(index.refresh([str(source)], show_progress=False))
        result.update(
            unchanged=report.total("unchanged"),
            updated=report.total("updated"),
            added=report.total("added"),
            deleted=report.total("deleted"),
            embedded=report.chunks_embedded,
            version_changed=report.version_after != report.version_before,
        )
    elif mode == "old-hashes":  # the pre-change doc_hashes: one projected table, every row into Python
        arrow = index.table.to_lance().to_table(columns=list(HASH_COLUMNS))
        columns = [arrow.column(name).to_pylist() for name in HASH_COLUMNS]
        result["documents"] = len({(s, d): h for s, d, h in zip(*columns)})
    elif mode == "full-scan":  # every column, text and vectors included
        rows = 0
        for batch in index.table.to_lance().to_batches(batch_size=65_536):
            rows += batch.num_rows
        result["rows"] = rows
    result["seconds"] = time.perf_counter() - started
    result["process_seconds"] = time.perf_counter() - process_started
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def measure(mode: str, index_dir: Path, source: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--index", str(index_dir), "--source", str(source)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_size(chunks_wanted: int, workdir: Path, keep: bool) -> list[dict[str, Any]]:
    """Build (or, with --keep, reuse) the index of one size and measure on it. The edit toggles one
    article between its two versions, so a kept index can be measured again."""
    documents = max(1, chunks_wanted // SECTIONS)
    folder = workdir / f"n{chunks_wanted}"
    source, state_file = folder / "export.jsonl", folder / "state.json"
    if keep and state_file.is_file():
        state = json.loads(state_file.read_text())
        print(f"# {chunks_wanted:,}: reusing the index built earlier ({state['rows']:,} chunks)", flush=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_source(source, documents)
        rows, build_seconds = build(folder / "index", source)
        state = {"rows": rows, "edited": False, "build_seconds": build_seconds}
        state_file.write_text(json.dumps(state))
        print(f"# {chunks_wanted:,}: built {rows:,} chunks from {documents:,} articles in {build_seconds:.0f} s")
    edited = frozenset({documents // 2})
    write_source(source, documents, edited if state["edited"] else frozenset())  # what the index holds
    results = []
    for mode in ("noop", "old-hashes", "full-scan"):
        results.append(measure(mode, folder / "index", source))
        print(f"#   {results[-1]}", flush=True)
    state["edited"] = not state["edited"]
    write_source(source, documents, edited if state["edited"] else frozenset())
    results.append(measure("edit", folder / "index", source))
    state_file.write_text(json.dumps(state))
    print(f"#   {results[-1]}", flush=True)
    results.append(measure("noop", folder / "index", source))  # after the edit: the export is untouched since
    results[0]["label"] = "no-op refresh (export read, every document's hash compared)"
    results[-1]["label"] = "no-op refresh (export untouched since the last refresh: not read)"
    print(f"#   {results[-1]}", flush=True)
    for result in results:
        result["chunks"] = state["rows"]
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| chunks | measurement | seconds | hash read alone | whole process | peak RSS (MB) | what it did |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {
        "noop": "no-op refresh",
        "edit": "one-document edit refresh",
        "old-hashes": "reference: pre-change hash read (to_table + to_pylist)",
        "full-scan": "reference: full scan of every column",
    }
    for result in results:
        if result["mode"] in ("noop", "edit"):
            did = (
                f"unchanged {result['unchanged']}, updated {result['updated']}, embedded {result['embedded']}, "
                f"new version: {'yes' if result['version_changed'] else 'no'}"
            )
        else:
            did = f"{result.get('documents', result.get('rows'))} {'documents' if 'documents' in result else 'rows'}"
        lines.append(
            f"| {result['chunks']:,} | {result.get('label', names[result['mode']])} | {result['seconds']:.2f} | "
            f"{result.get('hash_read_seconds', float('nan')):.2f} | {result['process_seconds']:.1f} | "
            f"{result['peak_rss_mb']:.0f} | {did} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=None, help="where indexes are built (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes in --workdir and reuse them")
    parser.add_argument("--child", choices=["noop", "edit", "old-hashes", "full-scan"], help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.index, args.source)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="refresh-scale-"))
    results: list[dict[str, Any]] = []
    for size in args.sizes:
        results.extend(run_size(size, workdir, args.keep))
    print()
    print(table(results))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
